"""The monitor's settings: one frozen object, built at the edge (CLI) only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bootwatch.errors import ConfigError

__all__ = ["MonitorSettings"]


@dataclass(frozen=True)
class MonitorSettings:
    """Every knob the monitor reads; see docs/monitor.md."""

    data_dir: Path = Path("bootwatch-data")
    #: SQLAlchemy URL; empty = ``sqlite:///<data_dir>/bootwatch.db`` (shared with the
    #: service in the embedded server: the tables are prefixed ``monitor_``)
    db_url: str = ""
    db_schema: str = ""
    host: str = "127.0.0.1"
    port: int = 8444
    #: seconds without an attestation or report before an enabled VM is ``stale``
    #: two and a half of the agent's default hourly cycles (+-10 % jitter): a VM is stale
    #: once it has missed two.  It was 900 s, so with the agent's defaults every VM went
    #: stale (and raised agent_unresponsive) for 45 minutes of each hour
    stale_after_seconds: float = 9000.0
    #: how often the stale sweep runs (0 = derived: a quarter of the window, 1-30 s)
    sweep_interval_seconds: float = 0.0
    #: token proof (docs/monitor.md): seconds within which a permitted attestation's token
    #: must come back in a verified report, else ``attestation_unproven``; 0 = not
    #: required (a named leniency: clients that attest without reporting stay healthy)
    token_proof_seconds: float = 0.0
    #: webhook receivers and the secret that signs their bodies (HMAC-SHA256)
    webhooks: tuple[str, ...] = ()
    webhook_secret: str = field(default="", repr=False)
    #: bearer tokens with write access (the service's admin tokens)
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)
    #: bearer tokens with read-only access (dashboard read-only role)
    reader_tokens: tuple[str, ...] = field(default=(), repr=False)
    #: reads without a token are allowed from loopback clients (the default)
    open_reads_on_loopback: bool = True
    #: token issuers whose OpenID metadata the monitor trusts to verify report tokens
    #: (exact issuer URLs; ``<issuer>/providers/<name>`` of a listed issuer also counts)
    trusted_issuers: tuple[str, ...] = ()
    #: CA bundle for fetching issuers' metadata over HTTPS (empty = system default)
    issuer_ca: str = ""
    #: remediation formats for the egress recommendation (bootwatch.net rule formats)
    egress_formats: tuple[str, ...] = ("nsg-json", "nftables")
    #: PEM public keys that sign agent releases; none = the release routes are off
    release_keys: tuple[str, ...] = ()
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.stale_after_seconds <= 0:
            raise ConfigError("--stale-after must be a positive number of seconds")
        if self.webhooks and not self.webhook_secret:
            raise ConfigError("--webhook needs --webhook-secret-file (bodies are signed)")
        for url in self.webhooks:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"--webhook {url!r}: not an http(s) URL")
            # a URL no client can parse (``http://[::1/``, a port ``:80a``) is refused at
            # start, where the operator sees it, not at each delivery attempt
            try:
                host = httpx.URL(url).host  # the host decoded, as a request does
            except (httpx.InvalidURL, ValueError) as exc:  # IDNA errors are ValueErrors
                raise ConfigError(f"--webhook {url!r}: {exc}") from None
            if not host:
                raise ConfigError(f"--webhook {url!r}: no host")

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'bootwatch.db'}"

    @property
    def sweep_interval(self) -> float:
        if self.sweep_interval_seconds > 0:
            return self.sweep_interval_seconds
        return min(30.0, max(1.0, self.stale_after_seconds / 4))
