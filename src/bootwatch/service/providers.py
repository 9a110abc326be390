"""Providers: their stored state, the cache of it, and the writes that create them.

One deployment hosts several attestation providers.  :class:`ProviderStore` reads a
provider's row, policies, signers and signing keys into an immutable
:class:`ProviderContext` per request (``name``, ``kind``, ``trust_model``,
``base_url`` = the token issuer, ``attest_auth_required``, ``policy(type)`` ->
:class:`ActivePolicy` with ``text``, ``policy_hash``, ``signer_jwk``, ``token_hash``
and ``compiled``, and ``token_signer``).  Which provider a request is for, and its
issuer, is the HTTP edge's business (:mod:`bootwatch.service.hosts`).  Storage raises
domain errors only (``NotFoundError``, ``ConflictError``, ``InputError``).

Provider state is cached per worker for ``Settings.cache_ttl_seconds`` (bounded, in
the store) and invalidated locally on every write; on PostgreSQL the write is also
announced to every other process (``service/changes.py``: LISTEN/NOTIFY), which
clears its cache at once; the TTL bounds staleness when a notification is missed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bootwatch.encoding import sha1_thumbprint
from bootwatch.errors import ConflictError, InputError, NotFoundError, StorageError
from bootwatch.lru import BoundedLru
from bootwatch.policy import (
    CompiledPolicy,
    PolicyCompiler,
    default_azureguest_policy,
    policy_hash,
    unsigned_policy_jws,
)
from bootwatch.service.db import utcnow
from bootwatch.service.keys import (
    TokenSigner,
    cert_jwk,
    load_private_key,
    published_keys,
    signing_key,
    store_new_key,
)
from bootwatch.service.models import PolicyRow, ProviderRow, SignerRow, SigningKeyRow
from bootwatch.service.settings import ATTESTATION_TYPES

if TYPE_CHECKING:
    from bootwatch.service.atrest import Sealer
    from bootwatch.service.changes import ChangeFeed
    from bootwatch.service.db import Database

__all__ = [
    "GENERIC_DEFAULT_POLICY",
    "ActivePolicy",
    "ProviderContext",
    "ProviderKind",
    "ProviderStore",
    "PublishedKey",
    "TrustModel",
    "canonical_type",
    "create_provider",
    "default_policy_text",
    "ensure_shared_providers",
    "validate_name",
]

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
    raise InputError(
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
        #: bumped by every forget: a load that a forget overtook is not cached (below)
        self._generation = 0
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
        """Drop the cached state of ``name`` (None: of every provider) in this process.

        A load running meanwhile may have read the state from before the change; the
        generation tells it not to cache what it read (else the change announced now
        would stay unseen here for a whole cache TTL).
        """
        with self._lock:
            self._generation += 1
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name)
            self._hosts = (0.0, {})

    def provider_for_host(self, host: str) -> str | None:
        ttl = self._ttl
        with self._lock:
            loaded, hosts = self._hosts
        if time.monotonic() - loaded > ttl:
            with self._lock:
                generation = self._generation
            with self._db.session() as s:
                rows = s.execute(
                    select(ProviderRow.hostname, ProviderRow.name).where(
                        ProviderRow.hostname.is_not(None)
                    )
                ).all()
            hosts = {str(h).lower(): n for h, n in rows}
            with self._lock:
                if generation == self._generation:
                    self._hosts = (time.monotonic(), hosts)
        return hosts.get(host.lower())

    def snapshot(self, name: str) -> _Snapshot:
        ttl = self._ttl
        snap = self._cache.get(name)
        if snap is not None and time.monotonic() - snap.loaded_at <= ttl:
            return snap
        with self._lock:
            generation = self._generation
        snap = self._load(name)
        with self._lock:
            if generation == self._generation:  # else a change overtook the load
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
            # the key that signs now (one published ahead waits for its start); none
            # only if every published key starts later, which no rotation leaves
            active = signing_key(key_rows, now) or next(r for r in key_rows if r.active)
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
    sealer: Sealer,
    name: str,
    *,
    kind: ProviderKind,
    trust_model: TrustModel,
    signers: Sequence[x509.Certificate] = (),
    hostname: str | None = None,
    attest_auth_required: bool = False,
) -> ProviderRow:
    """Insert a provider with its first signing key (sealed by ``sealer``) and its
    signers."""
    from cryptography.hazmat.primitives import serialization

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
                thumbprint=sha1_thumbprint(
                    cert.public_bytes(serialization.Encoding.DER), upper=True),
                cert_der=cert.public_bytes(serialization.Encoding.DER),
                added_at=now,
            )
        )
    store_new_key(s, sealer, name, now)
    return row


def ensure_shared_providers(db: Database, sealer: Sealer, names: Sequence[str]) -> None:
    """Create the shared providers ``names`` (the settings') if they do not exist yet.

    Replicas starting at once on a new database all find a provider missing and insert
    it; the later inserts fail on its key.  Such a failure is the provider existing,
    not an error: start-up goes on when the provider is there after all.
    """
    for name in names:
        try:
            with db.session() as s:
                if s.get(ProviderRow, name) is None:
                    create_provider(
                        s, sealer, name, kind=ProviderKind.SHARED, trust_model=TrustModel.AAD
                    )
        except StorageError:
            with db.session() as s:
                if s.get(ProviderRow, name) is None:
                    raise
