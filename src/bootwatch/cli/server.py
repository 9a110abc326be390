"""``bootwatch server``: the embedded default (service + monitor, one process, one port).

Takes every option of ``bootwatch service run`` plus the monitor's
(``--stale-after``, ``--webhook``, ``--webhook-secret-file``).  One worker:
the monitor's ingestion and sweeps live in this process (run ``bootwatch
service run --workers N --monitor-url URL`` beside ``bootwatch monitor run``
to scale out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bootwatch.cli.service import service_options, settings_from_options
from bootwatch.errors import ConfigError

__all__ = [
    "command",
    "monitor_options",
    "monitor_settings_from",
]


def monitor_options(f: Any) -> Any:
    f = click.option("--release-key", "release_keys", multiple=True,
                     type=click.Path(exists=True, dir_okay=False),
                     help="public key (PEM) that signs agent releases; turns on the release "
                     "routes and the batch rollout (repeatable)")(f)
    f = click.option("--egress-format", "egress_formats", multiple=True,
                     help="rule formats in the 'Allow outbound attestation traffic' "
                     "recommendation (repeatable; default nsg-json and nftables)")(f)
    f = click.option("--webhook-secret-file", type=click.Path(exists=True, dir_okay=False),
                     default=None, help="file holding the secret that signs webhook bodies")(f)
    f = click.option("--webhook", "webhooks", multiple=True,
                     help="URL that receives alert changes as signed JSON (repeatable)")(f)
    f = click.option("--require-token-proof", "token_proof", type=click.FloatRange(min=0),
                     default=0.0, show_default=True, metavar="SECONDS",
                     help="alert (attestation_unproven) when a permitted attestation's token "
                     "does not come back in a verified agent report within SECONDS (proof "
                     "that the VM could open it, so its boot is current); 0: not required")(f)
    f = click.option("--stale-after", "stale_after", envvar="BOOTWATCH_STALE_AFTER",
                     type=float, default=9000.0, show_default=True,
                     help="seconds without an attestation or report before an enabled VM "
                     "is stale (the default covers two missed cycles of the agent's default "
                     "hourly interval; shorten both together)")(f)
    return f


def monitor_settings_from(kw: dict[str, Any], **extra: Any) -> Any:
    import os

    from bootwatch.cli._files import read_limited_text
    from bootwatch.monitor.settings import MonitorSettings

    secret_file = kw.pop("webhook_secret_file", None)
    secret = ""
    if secret_file:
        secret = read_limited_text(secret_file, "webhook secret file", 64 * 1024).strip()
        if not secret:
            raise ConfigError(f"{secret_file}: the webhook secret file is empty")
    readers = tuple(t.strip() for t in os.environ.get("BOOTWATCH_READER_TOKENS", "").split(",")
                    if t.strip())
    formats = tuple(kw.pop("egress_formats", ()) or ()) or ("nsg-json", "nftables")
    return MonitorSettings(
        release_keys=tuple(kw.pop("release_keys", ()) or ()),
        egress_formats=formats,
        stale_after_seconds=kw.pop("stale_after"),
        token_proof_seconds=kw.pop("token_proof", 0.0) or 0.0,
        webhooks=tuple(kw.pop("webhooks", ()) or ()),
        webhook_secret=secret,
        reader_tokens=readers,
        **extra,
    )


@click.command()
@service_options
@monitor_options
def command(**kw: Any) -> None:
    """Run the attestation service and the monitor in one process on one port.

    MAA paths at the root, the monitor's API under /api/v1, SQLite in the data
    directory by default.  Admin tokens (which also authorise monitor writes) come
    from BOOTWATCH_ADMIN_TOKENS or --admin-tokens-file, never the command line.
    """
    import uvicorn

    from bootwatch.embedded import create_server_app
    from bootwatch.service.logs import configure_logging
    from bootwatch.service.server import tls_files, uvicorn_config

    monitor_settings = monitor_settings_from(kw)
    settings = settings_from_options(kw)
    if settings.workers != 1:
        raise ConfigError("bootwatch server runs one worker (the monitor lives in it); "
                          "scale out with bootwatch service run + bootwatch monitor run")
    configure_logging(settings.log_level)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    tls = tls_files(settings)
    app = create_server_app(settings, monitor_settings,
                            issuer_ca=str(tls.ca) if tls and tls.ca else "").app
    scheme = "http" if settings.insecure_http else "https"
    click.echo(f"bootwatch server on {scheme}://{settings.host}:{settings.port} "
               f"(attestation at the root, monitor at /api/v1; data in {settings.data_dir})",
               err=True)
    if tls and tls.ca:
        click.echo(f"development CA: {tls.ca}", err=True)
    uvicorn.Server(uvicorn_config(settings, app, tls)).run()
