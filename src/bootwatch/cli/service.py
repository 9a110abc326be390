"""``bootwatch service``: run the attestation service, migrate, purge evidence.

Settings come from options or the matching ``BOOTWATCH_*`` environment
variables (this is the only place they are read); see docs/service.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from bootwatch.errors import ConfigError
from bootwatch.service.settings import (
    DEFAULT_EVIDENCE_QUOTA_PER_CLIENT,
    DEFAULT_EVIDENCE_QUOTA_TOTAL,
)

__all__ = [
    "build_settings",
    "command",
    "db_options",
    "default_data_dir",
    "dev_cert_cmd",
    "migrate_cmd",
    "purge_cmd",
    "run_cmd",
    "service_options",
    "settings_from_options",
    "wait_cmd",
]


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/bootwatch/service``, else ``~/.local/share/bootwatch/service``.

    The service keeps its database, at-rest key and development TLS key here: never
    in the current folder, where they would land in a clone's working tree.
    ``--data-dir`` / ``$BOOTWATCH_DATA_DIR`` override it.
    """
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "bootwatch" / "service"


_DATA_DIR_SHOWN = "$XDG_DATA_HOME/bootwatch/service"


def _tuple(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def db_options(f: Any) -> Any:
    f = click.option(
        "--db-schema", envvar="BOOTWATCH_DB_SCHEMA", default="", help="PostgreSQL schema"
    )(f)
    f = click.option(
        "--data-dir",
        envvar="BOOTWATCH_DATA_DIR",
        default=default_data_dir,
        show_default=_DATA_DIR_SHOWN,
        type=click.Path(file_okay=False, path_type=Path),
        help="data directory (SQLite database, at-rest key, dev TLS certificate)",
    )(f)
    f = click.option(
        "--db", "db_url", envvar="BOOTWATCH_DB", default="", help="SQLAlchemy URL (default SQLite)"
    )(f)
    return f


def build_settings(**kw: Any) -> Any:
    """Settings from CLI options (the edge where settings are read).  The at-rest key
    comes from BOOTWATCH_AT_REST_KEY for every command (``service migrate`` creates the
    shared providers' signing keys: sealed under another key, replicas could not read
    them)."""
    import os

    from bootwatch.service.settings import Settings

    if not kw.get("at_rest_key"):
        kw["at_rest_key"] = os.environ.get("BOOTWATCH_AT_REST_KEY", "")

    shared = _tuple(kw.pop("shared_providers", None)) or ("shared",)
    default = kw.pop("default_provider", None) or shared[0]
    admin = tuple(kw.pop("admin_tokens", ()) or ())
    env_admin = _tuple(kw.pop("admin_tokens_env", None))
    return Settings(
        shared_providers=shared,
        default_provider=default,
        admin_tokens=admin + env_admin,
        **{k: v for k, v in kw.items() if v is not None},
    )


@click.group()
def command() -> None:
    """Run the MAA-compatible attestation service."""


#: the options of ``bootwatch service run`` (``bootwatch server`` takes them all too)
_SERVICE_OPTIONS = [
    click.option("--host", envvar="BOOTWATCH_HOST", default="127.0.0.1", show_default=True),
    click.option("--port", envvar="BOOTWATCH_PORT", default=8443, show_default=True, type=int),
    click.option("--workers", envvar="BOOTWATCH_WORKERS", default=1, show_default=True, type=int),
    click.option(
        "--cert", "tls_cert", envvar="BOOTWATCH_TLS_CERT", default="", help="PEM certificate"
    ),
    click.option(
        "--key", "tls_key", envvar="BOOTWATCH_TLS_KEY", default="", help="PEM private key"
    ),
    click.option("--insecure-http", is_flag=True, help="plain HTTP (loopback addresses only)"),
    click.option(
        "--admin-tokens-file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="file with static admin bearer tokens, one per line (tokens are never taken from "
        "the command line, where ps shows them; BOOTWATCH_ADMIN_TOKENS also works)",
    ),
    click.option("--oidc-issuer", envvar="BOOTWATCH_OIDC_ISSUER", default=""),
    click.option("--oidc-audience", envvar="BOOTWATCH_OIDC_AUDIENCE", default=""),
    click.option("--oidc-ca", envvar="BOOTWATCH_OIDC_CA", default=""),
    click.option(
        "--rate-limit",
        "rate_limit_per_second",
        envvar="BOOTWATCH_RATE_LIMIT",
        default=200.0,
        type=float,
        show_default=True,
        help="requests/s per client (0 = off)",
    ),
    click.option(
        "--rate-burst",
        "rate_limit_burst",
        envvar="BOOTWATCH_RATE_BURST",
        default=400,
        type=int,
        show_default=True,
    ),
    click.option(
        "--max-body",
        "max_body_bytes",
        envvar="BOOTWATCH_MAX_BODY",
        default=1_048_576,
        type=int,
        show_default=True,
    ),
    click.option(
        "--evidence-retention",
        "evidence_retention_seconds",
        envvar="BOOTWATCH_EVIDENCE_RETENTION",
        default=7 * 24 * 3600,
        type=int,
        show_default=True,
        help="seconds (0 = do not keep evidence)",
    ),
    click.option(
        "--evidence-quota-per-client",
        "evidence_quota_per_client_bytes",
        envvar="BOOTWATCH_EVIDENCE_QUOTA_PER_CLIENT",
        default=DEFAULT_EVIDENCE_QUOTA_PER_CLIENT,
        type=int,
        show_default=True,
        help="bytes of evidence kept per client address, oldest dropped first (0 = none)",
    ),
    click.option(
        "--evidence-quota-total",
        "evidence_quota_total_bytes",
        envvar="BOOTWATCH_EVIDENCE_QUOTA_TOTAL",
        default=DEFAULT_EVIDENCE_QUOTA_TOTAL,
        type=int,
        show_default=True,
        help="bytes of evidence kept in total, oldest dropped first (0 = none)",
    ),
    click.option(
        "--key-overlap",
        "key_overlap_seconds",
        envvar="BOOTWATCH_KEY_OVERLAP",
        default=14 * 24 * 3600,
        type=int,
        show_default=True,
    ),
    click.option(
        "--shared-providers",
        envvar="BOOTWATCH_SHARED_PROVIDERS",
        default="shared",
        show_default=True,
        help="comma-separated",
    ),
    click.option("--default-provider", envvar="BOOTWATCH_DEFAULT_PROVIDER", default=""),
    click.option("--public-url", "public_base_url", envvar="BOOTWATCH_PUBLIC_URL", default=""),
    click.option(
        "--allowed-host",
        "allowed_hosts",
        multiple=True,
        help="a host name (NAME: with the listening port or none) or an exact NAME:PORT pair "
        "clients may use in the Host header (repeatable); the listening host, loopback names "
        "and providers' host names are always accepted with the listening port",
    ),
    click.option(
        "--advertise-prefix",
        "advertise_prefixes",
        multiple=True,
        metavar="CIDR",
        help="an IPv4 or IPv6 CIDR published in GET /servicetags (repeatable); default: the "
        "address the service listens on",
    ),
    click.option(
        "--service-tag-name",
        envvar="BOOTWATCH_SERVICE_TAG_NAME",
        default="AzureAttestation",
        show_default=True,
        help="tag name in the published service-tag document (e.g. Bootwatch)",
    ),
    click.option("--region", envvar="BOOTWATCH_REGION", default="local"),
    click.option("--dbx-data", "dbx_data_path", envvar="BOOTWATCH_DBX_DATA", default=""),
    click.option(
        "--trust-anchors", "trust_anchors_path", envvar="BOOTWATCH_TRUST_ANCHORS",
        default="", help="PEM file or folder of AIK issuing CAs, added to the built-in "
        "azure-trusted-launch set",
    ),
    click.option(
        "--no-builtin-anchors", "no_builtin_anchors", is_flag=True, default=False,
        help="do not trust the built-in AIK anchor sets (azure-trusted-launch)",
    ),
    click.option(
        "--ek-trust-anchors", "ek_trust_anchors_path", envvar="BOOTWATCH_EK_TRUST_ANCHORS",
        default="", help="PEM file or folder of EK certificate CAs whose TPMs may enrol "
        "(POST /enroll/*); empty = enrolment refused",
    ),
    click.option(
        "--aik-cert-validity", "aik_cert_validity_seconds",
        envvar="BOOTWATCH_AIK_CERT_VALIDITY", default=365 * 24 * 3600, type=int,
        show_default=True, help="seconds an AIK certificate issued on enrolment is valid",
    ),
    click.option(
        "--secureboot-templates",
        "secureboot_templates_path",
        envvar="BOOTWATCH_SECUREBOOT_TEMPLATES",
        default="",
        help="JSON file of Secure Boot key templates accepted besides azure-trusted-launch",
    ),
    click.option("--log-level", envvar="BOOTWATCH_LOG_LEVEL", default="INFO"),
    click.option(
        "--events",
        "events_url",
        envvar="BOOTWATCH_EVENTS",
        default="",
        help="where outcome events go: nats://HOST:PORT (JetStream) or a monitor's "
        "https:// URL (bearer token from BOOTWATCH_MONITOR_TOKEN); absent: none "
        "(bootwatch server: its own monitor, in-process)",
    ),
    click.option(
        "--events-stream", envvar="BOOTWATCH_EVENTS_STREAM", default="BOOTWATCH_OUTCOMES",
        show_default=True, help="JetStream stream of outcome events (--events nats://)",
    ),
    click.option(
        "--events-subject", envvar="BOOTWATCH_EVENTS_SUBJECT", default="bootwatch.outcomes",
        show_default=True, help="JetStream subject of outcome events (--events nats://)",
    ),
    click.option(
        "--cache-ttl", "cache_ttl_seconds", envvar="BOOTWATCH_CACHE_TTL", default=2.0,
        type=float, show_default=True,
        help="seconds provider state (policies, signers, keys) is cached per process; on "
        "PostgreSQL other replicas' changes arrive at once (LISTEN/NOTIFY), this is the "
        "bound when a notification is missed",
    ),
    click.option(
        "--events-orphan-after", "events_orphan_after_seconds",
        envvar="BOOTWATCH_EVENTS_ORPHAN_AFTER", default=30.0, type=float, show_default=True,
        help="seconds after which any replica delivers an outcome event another process "
        "committed but did not deliver (it died, or its sink was away)",
    ),
    click.option(
        "--monitor-url",
        envvar="BOOTWATCH_MONITOR_URL",
        default="",
        help="older name of --events https://MONITOR",
    ),
    click.option(
        "--monitor-ca",
        envvar="BOOTWATCH_MONITOR_CA",
        default="",
        help="CA bundle for the monitor's HTTPS certificate",
    ),
]


def service_options(f: Any) -> Any:
    """Apply every ``service run`` option (and the database ones) to a command."""
    for option in reversed(_SERVICE_OPTIONS):
        f = option(f)
    return db_options(f)


def settings_from_options(kw: dict[str, Any]) -> Any:
    """Settings from ``service_options`` values plus the environment's secrets."""
    import os

    from bootwatch.cli._files import read_limited_text

    tokens_file = kw.pop("admin_tokens_file", None)
    if tokens_file:
        text = read_limited_text(tokens_file, "admin tokens file", 1024 * 1024)
        kw["admin_tokens"] = tuple(t.strip() for t in text.splitlines() if t.strip())
    kw["allowed_hosts"] = tuple(kw.pop("allowed_hosts", ()) or ())
    kw["advertise_prefixes"] = tuple(kw.pop("advertise_prefixes", ()) or ())
    kw["admin_tokens_env"] = os.environ.get("BOOTWATCH_ADMIN_TOKENS")
    kw["at_rest_key"] = os.environ.get("BOOTWATCH_AT_REST_KEY", "")
    kw["monitor_token"] = os.environ.get("BOOTWATCH_MONITOR_TOKEN", "")
    return build_settings(**kw)


@command.command("run")
@service_options
def run_cmd(**kw: Any) -> None:
    """Serve the attestation service (TLS with a development certificate by default).

    Admin tokens come from BOOTWATCH_ADMIN_TOKENS (comma-separated) or
    --admin-tokens-file, the at-rest key from BOOTWATCH_AT_REST_KEY: never from the
    command line.
    """

    from bootwatch.service.server import run

    settings = settings_from_options(kw)
    scheme = "http" if settings.insecure_http else "https"
    click.echo(
        f"bootwatch service on {scheme}://{settings.host}:{settings.port} "
        f"({settings.workers} worker(s), data in {settings.data_dir})",
        err=True,
    )
    run(settings)


@command.command("migrate")
@db_options
def migrate_cmd(**kw: Any) -> None:
    """Create or upgrade the database schema (the service also does this at start)."""
    from bootwatch.service.db import current_revision
    from bootwatch.service.state import bootstrap

    state = bootstrap(build_settings(**kw))
    try:
        click.echo(f"database at revision {current_revision(state.db.engine)}")
    finally:
        state.close()


@command.command("purge")
@db_options
def purge_cmd(**kw: Any) -> None:
    """Drop attestation evidence whose retention has ended."""
    from bootwatch.service.records import purge_expired_evidence
    from bootwatch.service.state import bootstrap

    state = bootstrap(build_settings(**kw), migrate=False, seed=False)
    try:
        click.echo(f"purged evidence of {purge_expired_evidence(state.db)} record(s)")
    finally:
        state.close()


@command.command("dev-cert")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="BOOTWATCH_DATA_DIR",
    default=default_data_dir, show_default=_DATA_DIR_SHOWN,
)
@click.option("--host", default="127.0.0.1")
def dev_cert_cmd(data_dir: Path, host: str) -> None:
    """Create (once) the development CA and server certificate; print the CA path."""
    from bootwatch.service.tls import ensure_dev_certificate

    files = ensure_dev_certificate(data_dir, (host,))
    if files.ca is None:  # pragma: no cover - dev certificates always have a CA
        raise ConfigError("no CA generated")
    click.echo(str(files.ca))


@command.command("wait")
@click.option("--url", default=None,
              help="Service base URL (default https://127.0.0.1:$BOOTWATCH_PORT, else :8443).")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM CA bundle of the service's TLS certificate (e.g. `service dev-cert`).")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait before giving up.")
def wait_cmd(url: str | None, ca: Path | None, timeout: float) -> None:
    """Wait until the service answers GET /readyz with 200 (for scripts that start it).

    Exit 0 when ready; 2 after --timeout, naming the last reason it was not.
    """
    import ssl
    import time

    import httpx

    base = (url or f"https://127.0.0.1:{os.environ.get('BOOTWATCH_PORT') or 8443}").rstrip("/")
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            verify: ssl.SSLContext | bool = True
            if ca is not None:
                verify = ssl.create_default_context(cafile=str(ca))
            resp = httpx.get(f"{base}/readyz", verify=verify, timeout=2.0)
            if resp.status_code == 200:
                click.echo(f"ready: {base}")
                return
            last = f"GET /readyz answered {resp.status_code}"
        except (OSError, httpx.HTTPError) as exc:
            last = str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            raise ConfigError(f"{base} not ready after {timeout:g} s: {last}")
        time.sleep(0.1)
