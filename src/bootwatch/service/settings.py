"""The one settings object of the service.

Every knob the service reads lives in :class:`Settings`, a frozen dataclass.
It is built at the edge only (``bootwatch.cli.service`` from command-line
options and the environment) and handed to :func:`bootwatch.service.app.create_app`.
Worker processes receive it as a JSON file (:meth:`Settings.to_json` /
:meth:`Settings.from_json`) so each worker builds its own app from the same
values; nothing is read from the environment at import time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootwatch.errors import ConfigError

__all__ = [
    "ATTESTATION_TYPES",
    "DEFAULT_EVIDENCE_QUOTA_PER_CLIENT",
    "DEFAULT_EVIDENCE_QUOTA_TOTAL",
    "Settings",
]

#: attestation types MAA knows (spec 2025-06-01 ``AttestationType``), canonical spelling
ATTESTATION_TYPES: tuple[str, ...] = (
    "AzureGuest",
    "Tpm",
    "SgxEnclave",
    "OpenEnclave",
    "SevSnpVm",
    "TdxVm",
)


#: 32 MiB: about 260 real Trusted Launch requests (~125 KB each), so one VM attesting
#: hourly with the agent's default keeps its whole retention window (7 days: 168
#: requests, ~21 MB) with room for restarts; it was 16 MiB, which kept about 5 days
DEFAULT_EVIDENCE_QUOTA_PER_CLIENT = 32 * 1024 * 1024
#: 512 MiB: a disk bound, not a retention promise: about 24 hourly VMs' 7 days
DEFAULT_EVIDENCE_QUOTA_TOTAL = 512 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything the service needs; see docs/service.md for each field."""

    #: directory for the SQLite database, the at-rest key, the dev TLS certificate
    data_dir: Path = Path("bootwatch-data")
    #: SQLAlchemy URL; empty means ``sqlite:///<data_dir>/bootwatch.db``
    db_url: str = ""
    #: PostgreSQL only: schema to use (search_path); empty = the server default
    db_schema: str = ""
    host: str = "127.0.0.1"
    port: int = 8443
    workers: int = 1
    #: PEM paths; empty = a development certificate generated into ``data_dir/tls``
    tls_cert: str = ""
    tls_key: str = ""
    #: plain HTTP (only allowed on a loopback host)
    insecure_http: bool = False
    #: key that encrypts signing keys at rest: 32 bytes as hex or base64; empty =
    #: generated into ``data_dir/at-rest.key`` (mode 0600) on first use
    at_rest_key: str = ""
    #: static bearer tokens accepted as administrators (embedded default set-up)
    admin_tokens: tuple[str, ...] = ()
    #: OpenID issuer whose JWKS signs bearer tokens for AAD-model providers
    oidc_issuer: str = ""
    #: audience the bearer tokens must carry; empty = MAA's resource,
    #: ``https://attest.azure.net`` (DEFAULT_OIDC_AUDIENCE).  Always checked: without it,
    #: a token the issuer minted for any application, with a role of that name, could
    #: change policies
    oidc_audience: str = ""
    #: role (in the token's ``roles`` claim) allowed to change policies
    oidc_write_role: str = "Attestation.Contributor"
    #: CA bundle for fetching the OIDC issuer's metadata (empty = system default)
    oidc_ca: str = ""
    #: per-client token bucket: sustained requests/second and burst size (0 = off)
    rate_limit_per_second: float = 200.0
    rate_limit_burst: int = 400
    #: largest accepted request body in bytes (413 above)
    max_body_bytes: int = 1_048_576
    #: how long attestation evidence is kept (seconds; 0 = never stored)
    evidence_retention_seconds: int = 7 * 24 * 3600
    #: evidence kept per client address (bytes; oldest dropped first; 0 = none kept):
    #: only requests that parsed as evidence are kept at all
    evidence_quota_per_client_bytes: int = DEFAULT_EVIDENCE_QUOTA_PER_CLIENT
    #: evidence kept in total (bytes; oldest dropped first; 0 = none kept)
    evidence_quota_total_bytes: int = DEFAULT_EVIDENCE_QUOTA_TOTAL
    #: how long a retired signing key stays published in /certs (seconds)
    key_overlap_seconds: int = 14 * 24 * 3600
    #: how long provider state (policies, keys) is cached per worker (seconds)
    cache_ttl_seconds: float = 2.0
    #: DBX data file and AIK trust anchors used by the attestation pipeline
    dbx_data_path: str = ""
    trust_anchors_path: str = ""
    #: do not trust the built-in AIK anchor sets (azure-trusted-launch); the configured
    #: ``trust_anchors_path`` and each provider's own AIK CA are still trusted
    no_builtin_anchors: bool = False
    #: PEM file or folder of EK certificate CAs (TPM manufacturers, swtpm's local CA, a
    #: cloud's vTPM CA) whose EKs may enrol; empty = enrolment is refused
    ek_trust_anchors_path: str = ""
    #: validity of the AIK certificates a provider issues on enrolment (seconds)
    aik_cert_validity_seconds: int = 365 * 24 * 3600
    #: how long a round-one enrolment challenge may be answered (seconds)
    enroll_challenge_ttl_seconds: int = 300
    #: JSON file of Secure Boot key templates accepted besides the built-in
    #: azure-trusted-launch one (``[{"name", "description", "pk", "kek", "db"}]``, SHA-1
    #: thumbprints; see docs/attestation.md)
    secureboot_templates_path: str = ""
    #: region label and the shared providers created at start-up
    region: str = "local"
    shared_providers: tuple[str, ...] = ("shared",)
    #: the provider answering at the root of the listening address
    default_provider: str = "shared"
    #: fixed public base URL (scheme://host[:port]); empty = taken from each request's
    #: Host header, which must then name a host this service answers for (below)
    public_base_url: str = ""
    #: host names accepted in the Host header besides ``host``, localhost, 127.0.0.1, ::1
    #: and providers' own host names; any other Host is refused (400), because the token
    #: issuer and the ``jku`` are built from it
    allowed_hosts: tuple[str, ...] = ()
    #: where outcome events go: ``nats://HOST:PORT`` (JetStream), ``http(s)://`` a
    #: monitor's base URL (HTTP sink); empty = none, or the embedded server's in-process
    #: monitor.  ``monitor_url`` is the older name of an http(s) ``events_url``.
    events_url: str = ""
    monitor_url: str = ""
    #: JetStream stream and subject of outcome events (``--events nats://``)
    events_stream: str = "BOOTWATCH_OUTCOMES"
    events_subject: str = "bootwatch.outcomes"
    #: seconds after which an undelivered outcome event in the outbox is taken by any
    #: replica's sweep (its own process died or its sink was away)
    events_orphan_after_seconds: float = 30.0
    #: seconds an attestation waits for its record's commit before it is answered 503
    record_commit_timeout_seconds: float = 10.0
    #: bearer token for the monitor (from BOOTWATCH_MONITOR_TOKEN, never argv)
    monitor_token: str = ""
    #: CA bundle for the monitor's HTTPS certificate
    monitor_ca: str = ""
    #: CIDRs published in the service-tag document (``GET /servicetags``); empty = the
    #: address the service listens on (for 0.0.0.0 / ::, this host's non-loopback
    #: addresses as its host name resolves)
    advertise_prefixes: tuple[str, ...] = ()
    #: name of the published service tag: AzureAttestation for drop-in use with rules
    #: written for Azure, or your own (e.g. Bootwatch)
    service_tag_name: str = "AzureAttestation"
    #: JSON logs level
    log_level: str = "INFO"
    #: value of the x-ms-maa-service-version response header
    service_version: str = "bootwatch-0.1.0"

    def __post_init__(self) -> None:
        if self.default_provider and self.default_provider not in self.shared_providers:
            raise ConfigError(
                f"default_provider {self.default_provider!r} is not one of the shared "
                f"providers {list(self.shared_providers)}"
            )
        if self.max_body_bytes <= 0:
            raise ConfigError("max_body_bytes must be positive")
        if self.rate_limit_per_second < 0 or self.rate_limit_burst < 0:
            raise ConfigError("rate limits must not be negative")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if self.evidence_quota_per_client_bytes < 0 or self.evidence_quota_total_bytes < 0:
            raise ConfigError("evidence quotas must not be negative")
        if self.aik_cert_validity_seconds <= 0 or self.enroll_challenge_ttl_seconds <= 0:
            raise ConfigError("aik_cert_validity_seconds and enroll_challenge_ttl_seconds "
                              "must be positive")

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL, defaulting to SQLite in the data directory."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'bootwatch.db'}"

    def to_json(self) -> str:
        """Serialise for worker processes (contains secrets: write it 0600)."""
        raw = dataclasses.asdict(self)
        raw["data_dir"] = str(self.data_dir)
        return json.dumps(raw)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        """Inverse of :meth:`to_json`; unknown keys are an error (strict)."""
        try:
            raw: dict[str, Any] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"settings file is not JSON: {exc}") from exc
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        raw["data_dir"] = Path(raw.get("data_dir", "bootwatch-data"))
        for key in ("admin_tokens", "shared_providers", "allowed_hosts", "advertise_prefixes"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)
