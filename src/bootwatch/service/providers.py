"""Providers: storage, per-request resolution, and the context handlers use.

One deployment hosts several attestation providers.  A request reaches a
provider by path prefix ``/providers/NAME/...`` (stripped by
:class:`ProviderPrefixMiddleware`), by the ``Host`` header when a provider has
a host name, or else reaches ``Settings.default_provider`` (a shared provider)
at the root of the listening address.

Public API for request handlers (stable names):

* :class:`ProviderContext` -- the resolved provider of one request: ``name``,
  ``kind`` (shared/custom), ``trust_model`` (aad/isolated), ``base_url`` (also
  the token issuer, ``iss``), ``attest_auth_required``, ``policy(type)`` ->
  :class:`ActivePolicy` (``text``, ``policy_hash``, ``signer``/``signer_jwk``,
  ``token_hash``, ``compiled()``), ``azureguest_policy``, and ``token_signer``
  (a :class:`~bootwatch.service.keys.TokenSigner`: ``sign(claims)`` -> RS256
  compact JWS with ``kid`` and ``jku`` headers).
* :func:`current_provider` -- FastAPI dependency returning the ProviderContext
  (404 ``NotFound`` for an unknown provider); ``CurrentProvider`` is the
  ``Annotated[ProviderContext, Depends(current_provider)]`` alias.

Provider state is cached per worker for ``Settings.cache_ttl_seconds`` and
invalidated locally on every write; on PostgreSQL the write is also announced
to every other process (``service/changes.py``: LISTEN/NOTIFY), which clears
its cache at once; the TTL bounds staleness when a notification is missed.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bootwatch.errors import ConfigError, ConflictError, InputError, NotFoundError
from bootwatch.lru import BoundedLru
from bootwatch.policy import (
    CompiledPolicy,
    PolicyCompiler,
    default_azureguest_policy,
    policy_hash,
    unsigned_policy_jws,
)
from bootwatch.service.db import utcnow
from bootwatch.service.deps import service_state
from bootwatch.service.errors import ApiError, invalid_parameter, not_found
from bootwatch.service.keys import (
    TokenSigner,
    cert_jwk,
    load_private_key,
    published_keys,
    store_new_key,
)
from bootwatch.service.models import PolicyRow, ProviderRow, SignerRow, SigningKeyRow
from bootwatch.service.settings import ATTESTATION_TYPES

if TYPE_CHECKING:
    from bootwatch.service.atrest import Sealer
    from bootwatch.service.changes import ChangeFeed
    from bootwatch.service.db import Database
    from bootwatch.service.settings import Settings
    from bootwatch.service.state import ServiceState

PREFIX = "/providers/"
SCOPE_PROVIDER = "bootwatch.provider"
SCOPE_PREFIX = "bootwatch.prefix"

#: default policy of every type but AzureGuest: permit and issue nothing extra
#: (MAA documents defaults per type only for SGX; this mirrors its shape)
GENERIC_DEFAULT_POLICY = (
    "version= 1.0;\nauthorizationrules\n{\n    => permit();\n};\nissuancerules\n{\n};\n"
)

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


class ProviderKind(StrEnum):
    SHARED = "shared"
    CUSTOM = "custom"


class TrustModel(StrEnum):
    AAD = "aad"
    ISOLATED = "isolated"


def canonical_type(value: str) -> str:
    """``azureguest`` -> ``AzureGuest``; unknown types are InvalidParameter."""
    for t in ATTESTATION_TYPES:
        if t.lower() == value.lower():
            return t
    raise invalid_parameter(
        f"attestationType {value!r} is not one of {', '.join(ATTESTATION_TYPES)}"
    )


def default_policy_text(attestation_type: str) -> str:
    if attestation_type == "AzureGuest":
        return default_azureguest_policy()
    return GENERIC_DEFAULT_POLICY


def validate_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= NAME_CHARS or name[0] == "-":
        raise InputError(
            f"provider name {name!r}: use 1-64 lower-case letters, digits and '-'"
        )
    return name


@dataclass(frozen=True)
class ActivePolicy:
    """The policy currently in force for one attestation type of a provider."""

    attestation_type: str
    text: str
    is_default: bool
    #: the JWS as uploaded (None for the built-in default)
    jws: str | None
    #: x-ms-policy-token-hash of the upload (None for the built-in default)
    token_hash: str | None
    signer: x509.Certificate | None
    #: the store's compiler (compiled policies are kept there, by policy hash)
    compiler: PolicyCompiler = field(compare=False, repr=False)

    @cached_property
    def policy_hash(self) -> str:
        """``x-ms-policy-hash``: base64url SHA-256 of base64url(policy text)."""
        return policy_hash(self.text)

    @cached_property
    def signer_jwk(self) -> dict[str, Any] | None:
        """``x-ms-policy-signer`` (JWK with x5c) when the policy was signed."""
        return cert_jwk(self.signer) if self.signer is not None else None

    @cached_property
    def stored_jws(self) -> str:
        """The ``x-ms-policy`` value: the uploaded JWS, or an unsigned one for defaults."""
        return self.jws if self.jws else unsigned_policy_jws(self.text)

    @cached_property
    def compiled(self) -> CompiledPolicy:
        """The compiled policy, for evaluation (compiled on first use, not at load: a
        stored policy that no longer compiles fails its own attestation type only)."""
        return self.compiler.compile(self.text)


@dataclass(frozen=True)
class PublishedKey:
    kid: str
    certificate: x509.Certificate
    active: bool


@dataclass(frozen=True)
class ProviderContext:
    """One provider as seen by one request (see the module docstring)."""

    name: str
    kind: ProviderKind
    trust_model: TrustModel
    base_url: str
    attest_auth_required: bool
    hostname: str | None
    policies: Mapping[str, ActivePolicy]
    signers: tuple[x509.Certificate, ...]
    keys: tuple[PublishedKey, ...]
    token_signer: TokenSigner

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def is_shared(self) -> bool:
        return self.kind is ProviderKind.SHARED

    def policy(self, attestation_type: str) -> ActivePolicy:
        return self.policies[canonical_type(attestation_type)]

    @property
    def azureguest_policy(self) -> ActivePolicy:
        return self.policies["AzureGuest"]


@dataclass
class _Snapshot:
    """Provider state independent of the request URL (cached per worker)."""

    row: ProviderRow
    policies: dict[str, ActivePolicy]
    signers: tuple[x509.Certificate, ...]
    keys: tuple[PublishedKey, ...]
    signer: TokenSigner
    loaded_at: float = field(default_factory=time.monotonic)


#: provider snapshots a store keeps (least recently used out)
SNAPSHOT_CACHE_SIZE = 1024
#: parsed signing keys a store keeps
KEY_CACHE_SIZE = 64


class ProviderStore:
    """Reads and caches provider state; writes go through the functions below.

    Owns its caches (bounded): provider snapshots (refreshed after ``ttl`` seconds or
    when a change is announced), parsed signing keys and the policy compiler.
    """

    def __init__(self, db: Database, sealer: Sealer, changes: ChangeFeed, *,
                 ttl: float, compiler: PolicyCompiler | None = None) -> None:
        self._db = db
        self._sealer = sealer
        self._changes = changes
        self._ttl = ttl
        self.compiler = compiler or PolicyCompiler()
        self._lock = threading.Lock()
        self._cache: BoundedLru[str, _Snapshot] = BoundedLru(SNAPSHOT_CACHE_SIZE)
        self._hosts: tuple[float, dict[str, str]] = (0.0, {})
        #: parsed signing keys by kid (a kid names one key for ever)
        self._keys: BoundedLru[str, rsa.RSAPrivateKey] = BoundedLru(KEY_CACHE_SIZE)

    def _private_key(self, row: SigningKeyRow) -> rsa.RSAPrivateKey:
        """The signing key of ``row``, decrypted and parsed once per worker: loading an
        RSA key checks it (~50 ms), and the snapshot is reloaded every cache TTL, which
        stalled the worker's event loop (and every request on it) that long."""
        return self._keys.get_or_compute(row.kid, lambda: load_private_key(self._sealer, row))

    def invalidate(self, name: str | None = None) -> None:
        """After a write: forget ``name`` here and tell the other processes."""
        self.forget(name)
        self._changes.announce(name or "")

    def forget(self, name: str | None = None) -> None:
        """Drop the cached state of ``name`` (None: of every provider) in this process."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name)
        with self._lock:
            self._hosts = (0.0, {})

    def provider_for_host(self, host: str) -> str | None:
        ttl = self._ttl
        with self._lock:
            loaded, hosts = self._hosts
        if time.monotonic() - loaded > ttl:
            with self._db.session() as s:
                rows = s.execute(
                    select(ProviderRow.hostname, ProviderRow.name).where(
                        ProviderRow.hostname.is_not(None)
                    )
                ).all()
            hosts = {str(h).lower(): n for h, n in rows}
            with self._lock:
                self._hosts = (time.monotonic(), hosts)
        return hosts.get(host.lower())

    def snapshot(self, name: str) -> _Snapshot:
        ttl = self._ttl
        snap = self._cache.get(name)
        if snap is not None and time.monotonic() - snap.loaded_at <= ttl:
            return snap
        snap = self._load(name)
        self._cache.put(name, snap)
        return snap

    def _load(self, name: str) -> _Snapshot:
        sealer = self._sealer
        now = utcnow()
        with self._db.session() as s:
            row = s.get(ProviderRow, name)
            if row is None:
                raise NotFoundError(f"no attestation provider named {name!r}")
            s.expunge(row)
            policies = _load_policies(s, name, self.compiler)
            signers = tuple(
                x509.load_der_x509_certificate(r.cert_der)
                for r in s.scalars(
                    select(SignerRow)
                    .where(SignerRow.provider == name, SignerRow.removed_at.is_(None))
                    .order_by(SignerRow.id)
                )
            )
            key_rows = published_keys(s, name, now)
            if not any(r.active for r in key_rows):
                store_new_key(s, sealer, name, now)
                s.flush()
                key_rows = published_keys(s, name, now)
            active = next(r for r in key_rows if r.active)
            keys = tuple(
                PublishedKey(r.kid, x509.load_der_x509_certificate(r.cert_der), r.active)
                for r in key_rows
            )
            active_cert = next(k.certificate for k in keys if k.kid == active.kid)
            signer = TokenSigner(active.kid, active_cert, self._private_key(active), "")
        return _Snapshot(row, policies, signers, keys, signer)

    def context(self, name: str, base_url: str) -> ProviderContext:
        snap = self.snapshot(name)
        row = snap.row
        return ProviderContext(
            name=row.name,
            kind=ProviderKind(row.kind),
            trust_model=TrustModel(row.trust_model),
            base_url=base_url,
            attest_auth_required=bool(row.attest_auth_required),
            hostname=row.hostname,
            policies=snap.policies,
            signers=snap.signers,
            keys=snap.keys,
            token_signer=snap.signer.with_issuer(base_url),
        )


def _load_policies(s: Session, name: str, compiler: PolicyCompiler) -> dict[str, ActivePolicy]:
    latest = (
        select(func.max(PolicyRow.id))
        .where(PolicyRow.provider == name)
        .group_by(PolicyRow.attestation_type)
    )
    rows = {
        r.attestation_type: r for r in s.scalars(select(PolicyRow).where(PolicyRow.id.in_(latest)))
    }
    out: dict[str, ActivePolicy] = {}
    for t in ATTESTATION_TYPES:
        r = rows.get(t)
        if r is None or r.text is None:
            out[t] = ActivePolicy(t, default_policy_text(t), True, None, None, None, compiler)
        else:
            signer = x509.load_der_x509_certificate(r.signer_der) if r.signer_der else None
            out[t] = ActivePolicy(t, r.text, False, r.jws, r.token_hash, signer, compiler)
    return out


# --- provider creation (CLI and start-up) ------------------------------------


def create_provider(
    s: Session,
    state: ServiceState,
    name: str,
    *,
    kind: ProviderKind,
    trust_model: TrustModel,
    signers: Sequence[x509.Certificate] = (),
    hostname: str | None = None,
    attest_auth_required: bool = False,
) -> ProviderRow:
    """Insert a provider with its first signing key (and its signers)."""
    from cryptography.hazmat.primitives import hashes, serialization

    validate_name(name)
    if s.get(ProviderRow, name) is not None:
        raise ConflictError(f"provider {name!r} already exists")
    if trust_model is TrustModel.ISOLATED and not signers:
        raise InputError(
            "an isolated provider needs at least one trusted signer certificate (--signer)"
        )
    now = utcnow()
    row = ProviderRow(
        name=name,
        kind=kind.value,
        trust_model=trust_model.value,
        hostname=hostname.lower() if hostname else None,
        attest_auth_required=attest_auth_required,
        created_at=now,
    )
    s.add(row)
    s.flush()
    for cert in signers:
        s.add(
            SignerRow(
                provider=name,
                thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - MAA thumbprint
                cert_der=cert.public_bytes(serialization.Encoding.DER),
                added_at=now,
            )
        )
    store_new_key(s, state.sealer, name, now)
    return row


def ensure_shared_providers(state: ServiceState) -> None:
    """Create the configured shared providers if they do not exist yet."""
    with state.db.session() as s:
        for name in state.settings.shared_providers:
            if s.get(ProviderRow, name) is None:
                create_provider(
                    s, state, name, kind=ProviderKind.SHARED, trust_model=TrustModel.AAD
                )


# --- request resolution --------------------------------------------------------


class ProviderPrefixMiddleware:
    """Strips ``/providers/NAME`` from the path and remembers NAME in the scope."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(PREFIX):
                rest = path[len(PREFIX) :]
                name, sep, tail = rest.partition("/")
                scope = dict(scope)
                scope[SCOPE_PROVIDER] = name
                scope[SCOPE_PREFIX] = PREFIX + name
                scope["path"] = "/" + tail if sep else "/"
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


def split_host(header: str) -> tuple[str, int | None]:
    """``host[:port]`` of a Host header, IPv6 literals (``[::1]:8443``) included."""
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            raise invalid_parameter(f"Host header {header!r} is not a valid host")
        host, rest = header[1:end], header[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise invalid_parameter(f"Host header {header!r} is not a valid host")
    elif header.count(":") == 1:
        host, port_text = header.split(":")
    else:
        host, port_text = header, ""
    if not port_text:
        return host.lower(), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise invalid_parameter(f"Host header {header!r} has an invalid port")
    return host.lower(), int(port_text)


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"https": 443, "http": 80}


def listening_port(request: Request, settings: Settings) -> int:
    """The port this request arrived on (the ASGI server's), else the configured one."""
    server = request.scope.get("server")
    if server and len(server) > 1 and isinstance(server[1], int) and server[1] > 0:
        return int(server[1])
    return settings.port


@functools.lru_cache(maxsize=8)
def allowed_host_pairs(
    entries: tuple[str, ...],
) -> tuple[frozenset[str], frozenset[tuple[str, int]]]:
    """``--allowed-host`` entries: names (see :func:`host_is_served`) and exact host:port
    pairs.  A malformed entry is a ConfigError (``create_app`` calls this at start-up)."""
    names: set[str] = set()
    pairs: set[tuple[str, int]] = set()
    for entry in entries:
        try:
            host, port = split_host(entry)
        except ApiError:
            raise ConfigError(f"--allowed-host {entry!r} is not a host or host:port") from None
        if port is None:
            names.add(host)
        else:
            pairs.add((host, port))
    return frozenset(names), frozenset(pairs)


def host_is_served(request: Request, state: ServiceState, host: str, port: int | None) -> bool:
    """Whether ``host[:port]`` of a Host header is one this service answers for.

    Accepted: a configured ``host:port`` pair exactly (``--allowed-host name:port``);
    a configured name (``--allowed-host name``, a provider's host name) with the
    listening port or no port (a reverse proxy on the scheme's default port); the
    listening host and loopback names with the listening port, or with no port when
    the service listens on the scheme's default port.  Any other port is refused: the
    issuer and ``jku`` of every token are built from this header.
    """
    settings = state.settings
    listening = listening_port(request, settings)
    names, pairs = allowed_host_pairs(settings.allowed_hosts)
    if port is not None and (host, port) in pairs:
        return True
    if host in _LOOPBACK_NAMES or host == settings.host.lower():
        if port is None:
            return _DEFAULT_PORTS.get(request.url.scheme) == listening
        return port == listening
    if host in names or state.providers.provider_for_host(host) is not None:
        return port is None or port == listening
    return False


def request_base_url(request: Request, prefix: str) -> str:
    """The base URL (issuer) of this request's provider.

    With ``public_base_url`` set it is that. Otherwise it comes from the Host header,
    which is accepted only for a host:port this service answers for
    (:func:`host_is_served`): the issuer and the ``jku`` of every token are built from
    it, so a forged Host, or a forged port, must not change them.
    """
    state = service_state(request)
    settings = state.settings
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/") + prefix
    header = request.headers.get("host")
    if not header:
        listening = listening_port(request, settings)
        return f"{request.url.scheme}://{_url_host(settings.host)}:{listening}{prefix}"
    host, port = split_host(header)
    if not host_is_served(request, state, host, port):
        shown = f"{host}:{port}" if port is not None else host
        raise invalid_parameter(
            f"Host {shown!r} is not served here (the service answers for its configured "
            f"host names on port {listening_port(request, settings)} and for configured "
            f"host:port pairs): start the service with --allowed-host {shown} or "
            "--public-url, or use one of its configured host names"
        )
    netloc = _url_host(host) + (f":{port}" if port is not None else "")
    return f"{request.url.scheme}://{netloc}{prefix}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def resolve_provider(request: Request) -> ProviderContext:
    """The provider a request is for (prefix, host name, or the default)."""
    state = service_state(request)
    name = request.scope.get(SCOPE_PROVIDER)
    prefix = request.scope.get(SCOPE_PREFIX, "")
    if name is None:
        header = request.headers.get("host")
        host = split_host(header)[0] if header else ""
        name = state.providers.provider_for_host(host) if host else None
        if name is None:
            name = state.settings.default_provider
            if not name:
                raise not_found("no default provider is configured; use /providers/NAME")
    return state.providers.context(name, request_base_url(request, prefix))


def current_provider(request: Request) -> ProviderContext:
    """FastAPI dependency: the resolved :class:`ProviderContext` of this request."""
    ctx: ProviderContext | None = getattr(request.state, "bw_provider", None)
    if ctx is None:
        ctx = resolve_provider(request)
        request.state.bw_provider = ctx
    return ctx


#: ``ctx: CurrentProvider`` in a handler signature = the request's ProviderContext
CurrentProvider = Annotated[ProviderContext, Depends(current_provider)]
