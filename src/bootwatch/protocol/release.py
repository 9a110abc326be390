"""Agent releases: the signed manifest the monitor offers and the upgrade rule.

A release is one bootwatch wheel described by a manifest (version, wheel file
name, size, SHA-256, optional agent-version constraints, publication time)
and a detached signature by a release key.  The signature covers the
*canonical* JSON bytes of the manifest (keys sorted, no spaces, ASCII only),
so the monitor may store and re-serve the manifest without breaking it, and
the agent verifies exactly what it will act on.

The agent trusts only the release public key(s) from its own configuration:
the monitor is a distribution channel, not a signer.  Decoding is strict and
names the bad field; a decoded-but-unverified release is an
:class:`UnverifiedRelease`; only :func:`verify_release` turns it into a
:class:`ReleaseManifest` the agent may act on.

The upgrade rule (:func:`check_upgrade`) is defined once here for both sides:
only a newer version, never a downgrade or a re-install; minor and patch
versions only unless a major is allowed; no pre-release unless allowed;
honouring the manifest's ``min_agent_version``/``max_agent_version``.
Versions are PEP 440 (via :mod:`packaging`).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from packaging.version import InvalidVersion, Version

from bootwatch.encoding import b64url_decode, b64url_encode
from bootwatch.errors import ProtocolError, VerificationError

__all__ = [
    "MANIFEST_FORMAT",
    "MAX_MANIFEST_BYTES",
    "PROJECT",
    "PrivateReleaseKey",
    "PublicReleaseKey",
    "RefusalReason",
    "ReleaseManifest",
    "ReleaseRefusedError",
    "SignatureAlgorithm",
    "UnverifiedRelease",
    "UpgradeVerdict",
    "canonical_manifest_bytes",
    "check_upgrade",
    "decode_signed_release",
    "encode_signed_release",
    "key_id",
    "load_private_key",
    "load_public_key",
    "parse_version",
    "sign_release",
    "verify_release",
    "wheel_file_name",
]

#: the distribution name every release wheel must carry
PROJECT: Final = "bootwatch"
#: manifest format version (bumped on an incompatible change of the shape)
MANIFEST_FORMAT: Final = 1
#: largest signed-manifest body accepted (a real one is ~700 bytes)
MAX_MANIFEST_BYTES: Final = 16 * 1024
_MAX_WHEEL_NAME: Final = 200
#: largest wheel a manifest may announce (a bootwatch wheel is ~300 KB)
_MAX_WHEEL_SIZE: Final = 256 * 1024 * 1024
_HEX64: Final = re.compile(r"^[0-9a-f]{64}\Z")
_B64URL: Final = re.compile(r"^[A-Za-z0-9_-]{1,200}\Z")
_WHEEL_NAME: Final = re.compile(r"^bootwatch-([A-Za-z0-9_.!+]+)-py3-none-any\.whl\Z")
_MANIFEST_KEYS: Final = frozenset(
    {"format", "project", "version", "wheel", "size", "sha256", "min_agent_version",
     "max_agent_version", "published_at", "key_id"}
)

PrivateReleaseKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicReleaseKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class SignatureAlgorithm(StrEnum):
    """The two signature algorithms a release key may use."""

    ED25519 = "Ed25519"
    #: ECDSA over P-256 with SHA-256, DER-encoded signature
    ES256 = "ES256"


class RefusalReason(StrEnum):
    """Why an offered release is not installed (stable codes for logs and status)."""

    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    HASH_MISMATCH = "hash_mismatch"
    SIZE_MISMATCH = "size_mismatch"
    DOWNGRADE = "downgrade"
    NOT_NEWER = "not_newer"
    MAJOR = "major_not_allowed"
    PRERELEASE = "prerelease_not_allowed"
    CONSTRAINT = "agent_version_constraint"
    RECENTLY_FAILED = "recently_failed"


class ReleaseRefusedError(VerificationError):
    """An offered release the agent (or the monitor) will not take; ``reason`` says why."""

    code = "release_refused"

    def __init__(self, message: str, *, reason: RefusalReason) -> None:
        super().__init__(f"release refused ({reason.value}): {message}")
        self.reason = reason


@dataclass(frozen=True)
class ReleaseManifest:
    """What a release claims about its wheel (verified only when from :func:`verify_release`)."""

    version: str
    wheel: str
    size: int
    sha256: str
    published_at: datetime
    key_id: str
    min_agent_version: str | None = None
    max_agent_version: str | None = None

    @property
    def parsed_version(self) -> Version:
        return Version(self.version)


@dataclass(frozen=True)
class UnverifiedRelease:
    """A decoded signed release whose signature has NOT been checked yet."""

    claimed: ReleaseManifest
    algorithm: SignatureAlgorithm
    signature: bytes
    #: the canonical bytes the signature must cover (re-derived, never taken from the wire)
    signed_bytes: bytes


@dataclass(frozen=True)
class UpgradeVerdict:
    """The upgrade rule's answer: ``allowed``, else a ``reason`` code and a sentence."""

    allowed: bool
    reason: RefusalReason | None = None
    message: str = ""


# --- versions ----------------------------------------------------------------


def parse_version(text: object, field: str) -> Version:
    """A PEP 440 version; :class:`ProtocolError` naming ``field`` otherwise."""
    if not isinstance(text, str) or not 1 <= len(text) <= 64:
        raise ProtocolError("must be a version string of 1-64 characters", field=field)
    try:
        version = Version(text)
    except InvalidVersion:
        raise ProtocolError(f"{text!r} is not a PEP 440 version", field=field) from None
    if version.local is not None:
        raise ProtocolError(f"{text!r}: a local version (+...) is not a release", field=field)
    return version


def wheel_file_name(version: str) -> str:
    """The wheel file name a release of ``version`` must have (pure-Python wheel)."""
    return f"{PROJECT}-{Version(version)}-py3-none-any.whl"


def check_upgrade(
    current: str,
    release: ReleaseManifest,
    *,
    allow_major: bool = False,
    allow_prerelease: bool = False,
) -> UpgradeVerdict:
    """May an agent at ``current`` move to ``release``?  Never a downgrade or a re-install.

    Majors (a new PEP 440 epoch counts as one) and pre-releases are refused unless the
    matching leniency is set; the manifest's own agent-version bounds (for releases
    that need a stepping stone) are honoured.  ``current`` is the running version
    (trusted).
    """
    cur = Version(current)
    new = release.parsed_version
    if new < cur:
        return UpgradeVerdict(
            False, RefusalReason.DOWNGRADE,
            f"{release.version} is older than the running {current}: downgrades are never taken",
        )
    if new == cur:
        return UpgradeVerdict(
            False, RefusalReason.NOT_NEWER, f"{release.version} is the running version"
        )
    # an epoch bump (``1!...``) restarts the numbering: at least as big a step as a major
    if (new.epoch, new.major) != (cur.epoch, cur.major) and not allow_major:
        return UpgradeVerdict(
            False, RefusalReason.MAJOR,
            f"{release.version} is a new major version (running {current}); "
            "set allow_major = true in [upgrade] to take it",
        )
    if (new.is_prerelease or new.is_devrelease) and not allow_prerelease:
        return UpgradeVerdict(
            False, RefusalReason.PRERELEASE,
            f"{release.version} is a pre-release (running {current}); "
            "set allow_prerelease = true in [upgrade] to take it",
        )
    if release.min_agent_version is not None and cur < Version(release.min_agent_version):
        return UpgradeVerdict(
            False, RefusalReason.CONSTRAINT,
            f"{release.version} needs an agent at {release.min_agent_version} or later "
            f"(running {current}); upgrade through an intermediate release",
        )
    if release.max_agent_version is not None and cur > Version(release.max_agent_version):
        return UpgradeVerdict(
            False, RefusalReason.CONSTRAINT,
            f"{release.version} is for agents up to {release.max_agent_version} "
            f"(running {current})",
        )
    return UpgradeVerdict(True)


# --- keys ----------------------------------------------------------------------


def key_id(public_key: PublicReleaseKey) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo DER, hex: names a key in manifests and logs."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _algorithm_of(key: PublicReleaseKey | PrivateReleaseKey) -> SignatureAlgorithm:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return SignatureAlgorithm.ED25519
    if not isinstance(key.curve, ec.SECP256R1):
        raise ProtocolError(f"release keys on curve {key.curve.name} are not accepted; use P-256")
    return SignatureAlgorithm.ES256


def load_public_key(pem: bytes, source: str) -> PublicReleaseKey:
    """A release public key from PEM (SubjectPublicKeyInfo); Ed25519 or ECDSA P-256 only."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{source}: not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise ProtocolError(f"{source}: release keys must be Ed25519 or ECDSA P-256")
    _algorithm_of(key)
    return key


def load_private_key(pem: bytes, source: str) -> PrivateReleaseKey:
    """A release signing key from unencrypted PKCS#8 PEM; Ed25519 or ECDSA P-256 only."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"{source}: not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ProtocolError(f"{source}: release keys must be Ed25519 or ECDSA P-256")
    _algorithm_of(key)
    return key


# --- encoding ----------------------------------------------------------------


def _manifest_object(m: ReleaseManifest) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "project": PROJECT,
        "version": m.version,
        "wheel": m.wheel,
        "size": m.size,
        "sha256": m.sha256,
        "min_agent_version": m.min_agent_version,
        "max_agent_version": m.max_agent_version,
        "published_at": m.published_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "key_id": m.key_id,
    }


def canonical_manifest_bytes(manifest: ReleaseManifest) -> bytes:
    """The exact bytes a release signature covers: sorted keys, no spaces, ASCII."""
    return json.dumps(
        _manifest_object(manifest), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


def sign_release(manifest: ReleaseManifest, key: PrivateReleaseKey) -> bytes:
    """The signed-release wire body for ``manifest``; ``manifest.key_id`` must name ``key``."""
    if manifest.key_id != key_id(key.public_key()):
        raise ProtocolError("the manifest's key_id does not name the signing key", field="key_id")
    data = canonical_manifest_bytes(manifest)
    algorithm = _algorithm_of(key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    else:
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    return encode_signed_release(manifest, algorithm, signature)


def encode_signed_release(
    manifest: ReleaseManifest, algorithm: SignatureAlgorithm, signature: bytes
) -> bytes:
    """``{"manifest": {...}, "alg": ..., "signature": base64url}`` (what the monitor serves)."""
    body = {
        "manifest": _manifest_object(manifest),
        "alg": algorithm.value,
        "signature": b64url_encode(signature),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


# --- decoding ----------------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise ProtocolError(f"release: {name} is not valid JSON")


def _str_field(obj: dict[str, Any], key: str, limit: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ProtocolError("must be a non-empty string", field=f"manifest.{key}")
    if len(value) > limit:
        raise ProtocolError(f"is longer than {limit} characters", field=f"manifest.{key}")
    return value


def _optional_version(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    return str(parse_version(value, f"manifest.{key}"))


def _decode_manifest(obj: object) -> ReleaseManifest:
    if not isinstance(obj, dict):
        raise ProtocolError("must be a JSON object", field="manifest")
    unknown = sorted(set(obj) - _MANIFEST_KEYS)
    if unknown:
        raise ProtocolError(f"unknown field(s) {', '.join(unknown)}", field="manifest")
    fmt = obj.get("format")
    if type(fmt) is not int or fmt != MANIFEST_FORMAT:  # not 1.0, not true
        raise ProtocolError(f"must be {MANIFEST_FORMAT}", field="manifest.format")
    if obj.get("project") != PROJECT:
        raise ProtocolError(f"must be {PROJECT!r}", field="manifest.project")
    version_text = _str_field(obj, "version", 64)
    version = parse_version(version_text, "manifest.version")
    if str(version) != version_text:
        raise ProtocolError(
            f"must be in normalised form ({version})", field="manifest.version"
        )
    wheel = _str_field(obj, "wheel", _MAX_WHEEL_NAME)
    match = _WHEEL_NAME.match(wheel)
    if match is None:
        raise ProtocolError(
            "must be a pure-Python bootwatch wheel file name "
            "(bootwatch-VERSION-py3-none-any.whl)", field="manifest.wheel",
        )
    if wheel != wheel_file_name(version_text):
        raise ProtocolError(
            f"names a different version than manifest.version ({version_text})",
            field="manifest.wheel",
        )
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= _MAX_WHEEL_SIZE:
        raise ProtocolError(
            f"must be an integer byte count in 1..{_MAX_WHEEL_SIZE}", field="manifest.size"
        )
    sha256 = _str_field(obj, "sha256", 64)
    if not _HEX64.match(sha256):
        raise ProtocolError("must be 64 lowercase hex digits", field="manifest.sha256")
    kid = _str_field(obj, "key_id", 64)
    if not _HEX64.match(kid):
        raise ProtocolError("must be 64 lowercase hex digits", field="manifest.key_id")
    published_text = _str_field(obj, "published_at", 40)
    try:
        published = datetime.fromisoformat(published_text.replace("Z", "+00:00"))
    except ValueError:
        raise ProtocolError("is not an ISO 8601 time", field="manifest.published_at") from None
    if published.tzinfo is None:
        raise ProtocolError("must carry a time zone (Z)", field="manifest.published_at")
    try:
        # an offset time at the calendar's edge has no UTC value (OverflowError, untyped)
        published = published.astimezone(UTC)
    except OverflowError:
        raise ProtocolError("is out of range in UTC", field="manifest.published_at") from None
    if published.microsecond:
        # the signed canonical form has whole seconds: a fraction would be acted on unsigned
        raise ProtocolError("must be in whole seconds (the signature covers no fraction)",
                            field="manifest.published_at")
    return ReleaseManifest(
        version=version_text,
        wheel=wheel,
        size=size,
        sha256=sha256,
        published_at=published,
        key_id=kid,
        min_agent_version=_optional_version(obj, "min_agent_version"),
        max_agent_version=_optional_version(obj, "max_agent_version"),
    )


def decode_signed_release(body: bytes) -> UnverifiedRelease:
    """Decode a signed-release body strictly; the signature is NOT checked here."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise ProtocolError(f"release: body is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        obj = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"release: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("release: the body must be a JSON object")
    unknown = sorted(set(obj) - {"manifest", "alg", "signature"})
    if unknown:
        raise ProtocolError(f"release: unknown field(s) {', '.join(unknown)}")
    manifest = _decode_manifest(obj.get("manifest"))
    alg_text = obj.get("alg")
    try:
        algorithm = SignatureAlgorithm(str(alg_text))
    except ValueError:
        raise ProtocolError(
            "must be one of " + ", ".join(a.value for a in SignatureAlgorithm), field="alg"
        ) from None
    sig_text = obj.get("signature")
    if not isinstance(sig_text, str) or not _B64URL.match(sig_text):
        raise ProtocolError("must be a base64url string of 1-200 characters",
                            field="signature")
    try:
        signature = b64url_decode(sig_text)
    except (binascii.Error, ValueError):
        raise ProtocolError("is not base64url", field="signature") from None
    return UnverifiedRelease(
        claimed=manifest,
        algorithm=algorithm,
        signature=signature,
        signed_bytes=canonical_manifest_bytes(manifest),
    )


def verify_release(
    release: UnverifiedRelease, trusted_keys: tuple[PublicReleaseKey, ...]
) -> ReleaseManifest:
    """The manifest, once its signature verifies under one of ``trusted_keys``.

    :class:`ReleaseRefusedError` (``unknown_key`` or ``bad_signature``) otherwise.
    """
    key = next((k for k in trusted_keys if key_id(k) == release.claimed.key_id), None)
    if key is None:
        raise ReleaseRefusedError(
            f"release {release.claimed.version} is signed by key {release.claimed.key_id[:16]}..., "
            "which is not a trusted release key",
            reason=RefusalReason.UNKNOWN_KEY,
        )
    if _algorithm_of(key) is not release.algorithm:
        raise ReleaseRefusedError(
            f"alg {release.algorithm.value} does not match the trusted key's algorithm",
            reason=RefusalReason.BAD_SIGNATURE,
        )
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(release.signature, release.signed_bytes)
        else:
            key.verify(release.signature, release.signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ReleaseRefusedError(
            f"the signature of release {release.claimed.version} does not verify under "
            f"trusted key {release.claimed.key_id[:16]}...",
            reason=RefusalReason.BAD_SIGNATURE,
        ) from None
    return release.claimed
