"""Running the service under uvicorn: one process, or several workers.

With one worker the app is built here and served directly.  With several,
the settings are written to ``<data_dir>/service-settings.json`` (mode 0600)
and each uvicorn worker process calls
:func:`bootwatch.service.worker.app_factory`, which reads that file (path in
``BOOTWATCH_SETTINGS_FILE``) and calls ``create_app(settings)`` itself.
Migrations and shared providers are set up once, before workers start.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

import uvicorn

from bootwatch.errors import ConfigError
from bootwatch.service.httpproto import GRACEFUL_SHUTDOWN_SECONDS, HTTP_PROTOCOL
from bootwatch.service.logs import configure_logging
from bootwatch.service.settings import Settings
from bootwatch.service.state import bootstrap
from bootwatch.service.tls import TlsFiles, ensure_dev_certificate

__all__ = [
    "SETTINGS_ENV",
    "is_loopback",
    "run",
    "tls_files",
    "uvicorn_config",
]

SETTINGS_ENV = "BOOTWATCH_SETTINGS_FILE"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_files(settings: Settings) -> TlsFiles | None:
    """The certificate to serve: the configured one, a dev one, or None (plain http)."""
    if settings.insecure_http:
        if not is_loopback(settings.host):
            raise ConfigError(
                f"--insecure-http is only allowed on a loopback address, not {settings.host!r}"
            )
        return None
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise ConfigError("--cert and --key go together")
        for p in (settings.tls_cert, settings.tls_key):
            if not Path(p).is_file():
                raise ConfigError(f"TLS file not found: {p}")
        return TlsFiles(Path(settings.tls_cert), Path(settings.tls_key), None)
    return ensure_dev_certificate(settings.data_dir, (settings.host,))


def uvicorn_config(settings: Settings, app: object, tls: TlsFiles | None) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
        http=HTTP_PROTOCOL,
    )


def run(settings: Settings) -> None:
    """Serve until interrupted (the ``bootwatch service run`` command)."""
    configure_logging(settings.log_level)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    tls = tls_files(settings)
    if settings.workers == 1:
        from bootwatch.service.app import create_app

        uvicorn.Server(uvicorn_config(settings, create_app(settings), tls)).run()
        return
    # set up the database once, then let each worker build its own app
    bootstrap(settings).close()
    settings_file = Path(settings.data_dir) / "service-settings.json"
    fd = os.open(settings_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(settings.to_json())
    metrics_dir = Path(settings.data_dir) / "prometheus-multiproc"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ[SETTINGS_ENV] = str(settings_file)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "bootwatch.service.worker:app_factory",
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        http=HTTP_PROTOCOL,
    )
