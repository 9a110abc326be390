"""Enrolment wire shapes (agent <-> provider): two rounds of credential activation.

Round one, ``POST /enroll/challenge``: the agent sends its TPM's EK certificate, the
AIK's public area and name, and the VM id it wants in the AIK certificate.  The
provider answers a TPM2_MakeCredential blob and encrypted secret for that EK and AIK,
plus an opaque ``service_context`` (sealed by the provider) to return in round two.

Round two, ``POST /enroll/activate``: the agent returns the secret its TPM released
with TPM2_ActivateCredential, the AIK name again and the ``service_context``; the
provider answers the AIK certificate it issued and the CA chain above it.

Every binary field is base64url without padding (as MAA's wire format); every body is
a JSON object of exactly the keys listed, each checked for type and size.  A decoded
request is *claimed* (``claimed_vm_id``, ``unverified_*``): only the provider's checks
make it trusted.  Decoding errors are :class:`~bootwatch.errors.ProtocolError` naming
the field, and nothing else (tests/protocol/test_enroll_fuzz.py).
"""

from __future__ import annotations

import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509

from bootwatch.encoding import b64url_decode, b64url_encode
from bootwatch.errors import BootwatchError, ProtocolError
from bootwatch.tpm.public import TpmPublic, parse_tpm2b_public
from bootwatch.x509read import CertificateFieldError, read_all_fields

__all__ = [
    "ACTIVATE_PATH",
    "CHALLENGE_PATH",
    "MAX_ENROLL_BODY",
    "ActivateRequest",
    "ChallengeRequest",
    "ChallengeResponse",
    "EnrolledAik",
    "decode_activate_request",
    "decode_challenge_request",
    "decode_challenge_response",
    "decode_enrolled_aik",
    "encode_activate_request",
    "encode_challenge_request",
    "encode_challenge_response",
    "encode_enrolled_aik",
]

#: paths of the two rounds (under the provider's base URL)
CHALLENGE_PATH: Final = "/enroll/challenge"
ACTIVATE_PATH: Final = "/enroll/activate"
#: largest body of either round, either direction
MAX_ENROLL_BODY: Final = 64 * 1024
#: largest certificate (EK or AIK) carried
MAX_CERT_BYTES: Final = 8 * 1024
_MAX_PUBLIC: Final = 1024
_MAX_NAME: Final = 2 + 64
_MAX_BLOB: Final = 2 + 2 + 64 + 2 + 64
_MAX_SECRET_BLOB: Final = 2 + 1024
_MAX_CONTEXT: Final = 4096
_MAX_SECRET: Final = 64
_MAX_CHAIN: Final = 8


@dataclass(frozen=True)
class ChallengeRequest:
    """Round one, agent -> provider."""

    unverified_ek_cert: x509.Certificate
    unverified_ek_cert_der: bytes
    unverified_ek_pub: TpmPublic
    unverified_aik_pub: TpmPublic
    claimed_aik_name: bytes
    claimed_vm_id: str


@dataclass(frozen=True)
class ChallengeResponse:
    """Round one, provider -> agent: MakeCredential's outputs and the sealed context."""

    credential_blob: bytes  # TPM2B_ID_OBJECT
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET
    service_context: bytes


@dataclass(frozen=True)
class ActivateRequest:
    """Round two, agent -> provider."""

    service_context: bytes
    claimed_secret: bytes
    claimed_aik_name: bytes


@dataclass(frozen=True)
class EnrolledAik:
    """Round two, provider -> agent: the issued AIK certificate and its CA chain."""

    aik_cert_der: bytes
    chain_der: tuple[bytes, ...]


# --- helpers ------------------------------------------------------------------------



def _reject_constant(name: str) -> None:
    raise ProtocolError(f"{name} is not valid JSON", field="body")


def _object(body: bytes, keys: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(body, bytes | bytearray):
        raise ProtocolError("not bytes", field="body")
    if len(body) > MAX_ENROLL_BODY:
        raise ProtocolError(f"{what} is {len(body)} bytes, over {MAX_ENROLL_BODY}", field="body")
    try:
        obj = json.loads(bytes(body), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not JSON ({type(exc).__name__})", field="body") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object", field="body")
    missing = sorted(keys - obj.keys())
    if missing:
        raise ProtocolError("required in " + what, field=missing[0])
    extra = sorted(obj.keys() - keys)
    if extra:
        raise ProtocolError(f"not a field of {what}", field=extra[0])
    return obj


def _bin(obj: dict[str, Any], key: str, limit: int) -> bytes:
    value = obj[key]
    if not isinstance(value, str):
        raise ProtocolError("must be a base64url string", field=key)
    if len(value) > (limit * 4 + 2) // 3 + 4:
        raise ProtocolError(f"longer than {limit} bytes", field=key)
    if not value or any(c not in _B64URL for c in value) or len(value) % 4 == 1:
        raise ProtocolError("not base64url (A-Z a-z 0-9 - _, no padding)", field=key)
    try:
        raw = b64url_decode(value)
    except (binascii.Error, ValueError):
        raise ProtocolError("not base64url", field=key) from None
    if len(raw) > limit:
        raise ProtocolError(f"{len(raw)} bytes, over {limit}", field=key)
    return raw


_B64URL: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _tpm2b_exact(raw: bytes, key: str, structure: str) -> bytes:
    """Check that ``raw`` is one TPM2B: a big-endian size then exactly that many bytes."""
    if len(raw) < 2:
        raise ProtocolError(f"{structure} truncated: {len(raw)} bytes, no size field",
                            field=key)
    size = int.from_bytes(raw[:2], "big")
    if size != len(raw) - 2:
        raise ProtocolError(f"{structure} size field says {size} bytes but {len(raw) - 2} "
                            "follow (truncated or padded)", field=key)
    if size == 0:
        raise ProtocolError(f"{structure} is empty", field=key)
    return raw


def _name(raw: bytes, key: str) -> bytes:
    """A TPM2B_NAME's content: nameAlg (UINT16) then its digest."""
    sizes = {0x0004: 20, 0x000B: 32, 0x000C: 48, 0x000D: 64}
    if len(raw) < 2:
        raise ProtocolError("a TPM name is nameAlg (2 bytes) then a digest", field=key)
    alg = int.from_bytes(raw[:2], "big")
    want = sizes.get(alg)
    if want is None:
        raise ProtocolError(f"name algorithm 0x{alg:04x} is not a supported hash", field=key)
    if len(raw) != 2 + want:
        raise ProtocolError(f"a name with hash 0x{alg:04x} is {2 + want} bytes, not {len(raw)}",
                            field=key)
    return raw


def _vm_id(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise ProtocolError("must be a GUID string", field="vm_id")
    try:
        return str(uuid.UUID(value)).upper()
    except ValueError:
        raise ProtocolError(f"{value[:40]!r} is not a GUID", field="vm_id") from None


def _certificate(raw: bytes, key: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(raw)
        read_all_fields(cert)
    except CertificateFieldError as exc:
        raise ProtocolError(f"the certificate's {exc.part} cannot be read ({exc.cause})",
                            field=key) from None
    except (ValueError, TypeError, x509.InvalidVersion) as exc:
        raise ProtocolError(f"not a DER X.509 certificate ({exc})", field=key) from None
    return cert


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --- round one ----------------------------------------------------------------------

_CHALLENGE_KEYS: Final = frozenset({"ek_cert", "ek_pub", "aik_pub", "aik_name", "vm_id"})


def encode_challenge_request(ek_cert_der: bytes, ek_pub: bytes, aik_pub: bytes,
                             aik_name: bytes, vm_id: str) -> bytes:
    """Round one body; ``ek_pub`` and ``aik_pub`` are TPM2B_PUBLIC, ``aik_name`` the name.

    The EK public area travels besides the certificate because MakeCredential needs the
    EK's nameAlg and symmetric definition, which a certificate does not carry; the
    provider checks that its key is the certified one.
    """
    return _dumps({"ek_cert": b64url_encode(ek_cert_der), "ek_pub": b64url_encode(ek_pub),
                   "aik_pub": b64url_encode(aik_pub), "aik_name": b64url_encode(aik_name),
                   "vm_id": vm_id})


def _public(obj: dict[str, Any], key: str) -> TpmPublic:
    raw = _tpm2b_exact(_bin(obj, key, _MAX_PUBLIC), key, "TPM2B_PUBLIC")
    try:
        return parse_tpm2b_public(raw)
    except BootwatchError as exc:
        raise ProtocolError(str(exc), field=key) from None


def decode_challenge_request(body: bytes) -> ChallengeRequest:
    """Decode round one; ProtocolError names the field."""
    obj = _object(body, _CHALLENGE_KEYS, "the enrolment challenge request")
    ek_der = _bin(obj, "ek_cert", MAX_CERT_BYTES)
    ek_cert = _certificate(ek_der, "ek_cert")
    ek_pub = _public(obj, "ek_pub")
    aik_pub = _public(obj, "aik_pub")
    name = _name(_bin(obj, "aik_name", _MAX_NAME), "aik_name")
    return ChallengeRequest(
        unverified_ek_cert=ek_cert,
        unverified_ek_cert_der=ek_der,
        unverified_ek_pub=ek_pub,
        unverified_aik_pub=aik_pub,
        claimed_aik_name=name,
        claimed_vm_id=_vm_id(obj["vm_id"]),
    )


_RESPONSE_KEYS: Final = frozenset({"credential_blob", "encrypted_secret", "service_context"})


def encode_challenge_response(r: ChallengeResponse) -> bytes:
    return _dumps({"credential_blob": b64url_encode(r.credential_blob),
                   "encrypted_secret": b64url_encode(r.encrypted_secret),
                   "service_context": b64url_encode(r.service_context)})


def decode_challenge_response(body: bytes) -> ChallengeResponse:
    """Decode the provider's round-one answer (agent side)."""
    obj = _object(body, _RESPONSE_KEYS, "the enrolment challenge")
    blob = _tpm2b_exact(_bin(obj, "credential_blob", _MAX_BLOB), "credential_blob",
                        "TPM2B_ID_OBJECT")
    inner = blob[2:]
    if len(inner) < 2 or int.from_bytes(inner[:2], "big") + 2 >= len(inner):
        raise ProtocolError("TPM2B_ID_OBJECT's integrityHMAC is truncated or leaves no "
                            "encIdentity", field="credential_blob")
    secret = _tpm2b_exact(_bin(obj, "encrypted_secret", _MAX_SECRET_BLOB), "encrypted_secret",
                          "TPM2B_ENCRYPTED_SECRET")
    return ChallengeResponse(blob, secret, _bin(obj, "service_context", _MAX_CONTEXT))


# --- round two ----------------------------------------------------------------------

_ACTIVATE_KEYS: Final = frozenset({"service_context", "secret", "aik_name"})


def encode_activate_request(service_context: bytes, secret: bytes, aik_name: bytes) -> bytes:
    return _dumps({"service_context": b64url_encode(service_context),
                   "secret": b64url_encode(secret),
                   "aik_name": b64url_encode(aik_name)})


def decode_activate_request(body: bytes) -> ActivateRequest:
    """Decode round two; ProtocolError names the field."""
    obj = _object(body, _ACTIVATE_KEYS, "the enrolment activation request")
    return ActivateRequest(
        service_context=_bin(obj, "service_context", _MAX_CONTEXT),
        claimed_secret=_bin(obj, "secret", _MAX_SECRET),
        claimed_aik_name=_name(_bin(obj, "aik_name", _MAX_NAME), "aik_name"),
    )


_ENROLLED_KEYS: Final = frozenset({"aik_cert", "chain"})


def encode_enrolled_aik(r: EnrolledAik) -> bytes:
    return _dumps({"aik_cert": b64url_encode(r.aik_cert_der),
                   "chain": [b64url_encode(c) for c in r.chain_der]})


def decode_enrolled_aik(body: bytes) -> EnrolledAik:
    """Decode the provider's round-two answer (agent side)."""
    obj = _object(body, _ENROLLED_KEYS, "the enrolment result")
    cert = _bin(obj, "aik_cert", MAX_CERT_BYTES)
    _certificate(cert, "aik_cert")
    chain = obj["chain"]
    if not isinstance(chain, list) or len(chain) > _MAX_CHAIN:
        raise ProtocolError(f"must be a list of at most {_MAX_CHAIN} certificates",
                            field="chain")
    ders: list[bytes] = []
    for i, item in enumerate(chain):
        der = _bin({f"chain[{i}]": item}, f"chain[{i}]", MAX_CERT_BYTES)
        _certificate(der, f"chain[{i}]")
        ders.append(der)
    return EnrolledAik(cert, tuple(ders))
