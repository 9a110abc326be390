"""Policy upload documents: plain text or a JWS around it, signatures and signer trust.

Formats (maa-protocol.md 2.8; author-sign-policy.md):

* plain policy text, or
* a compact JWS whose payload is ``{"AttestationPolicy": "<base64url(UTF-8 policy)>"}``,
  unsigned (``alg: none``, empty signature) or RS256-signed with the signer certificate in
  the header's ``x5c`` or ``jwk.x5c`` (the Azure SDK writes ``jwk.x5c`` and the alg name
  ``RSA256``; both are accepted). An empty payload, or an empty ``AttestationPolicy``, is a
  reset.

JWS framing and RS256 verification are PyJWT's; this module only chooses the key (from the
header's certificate) and decides whether the signer is trusted. Named leniencies:
``alg-RSA256`` (Azure SDK ``_create_secured_jwt``) and ``plain-text-policy-claim``
(``AttestationPolicy`` holding the text itself, as the signed SGX sample in
policy-examples.md does).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.api_jws import PyJWS

from bootwatch.encoding import b64url_decode, b64url_encode
from bootwatch.policy.errors import (
    PolicyDocumentError,
    PolicyParsingError,
    PolicySignatureError,
    UntrustedSignerError,
)
from bootwatch.policy.hashes import policy_token_hash
from bootwatch.policy.parser import check_policy_text
from bootwatch.x509read import DECODE_ERRORS, CertificateFieldError, read_all_fields

__all__ = [
    "MAX_CHAIN",
    "MAX_DOCUMENT_CHARS",
    "MIN_RSA_BITS",
    "PolicyDocument",
    "VerifiedJws",
    "parse_policy_document",
    "policy_certificate_from_payload",
    "sign_policy",
    "sign_policy_certificate",
    "unsigned_policy_jws",
    "verify_signed_jws",
]

#: Largest upload body accepted (characters).
MAX_DOCUMENT_CHARS = 1024 * 1024
#: Most certificates read from an ``x5c`` chain.
MAX_CHAIN = 8
#: Smallest RSA signer key accepted.
MIN_RSA_BITS = 2048

_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_SIGNED_ALGS = ("RS256", "RSA256")

_jws = PyJWS(algorithms=["RS256", "none"])
_jws.register_algorithm("RSA256", RSAAlgorithm(RSAAlgorithm.SHA256))


@dataclass(frozen=True, slots=True)
class VerifiedJws:
    """A JWS whose RS256 signature verified and whose signer is trusted."""

    header: Mapping[str, Any]
    payload: dict[str, Any]
    signer: x509.Certificate


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A policy upload, decoded (and verified if it was signed).

    ``text`` is the policy ("" for a reset); ``jws`` the exact compact JWS received, or
    None for a plain-text upload; ``signer`` the verified signer certificate, or None;
    ``token_hash`` the x-ms-policy-token-hash (for a plain-text upload, the hash of the
    unsigned JWS the Azure SDK would have sent for the same text).
    """

    text: str
    jws: str | None
    signer: x509.Certificate | None
    token_hash: str
    tolerances: tuple[str, ...] = ()

    @property
    def is_reset(self) -> bool:
        return self.text == ""

    @property
    def is_signed(self) -> bool:
        return self.signer is not None


# --- building ------------------------------------------------------------------------------


def _payload_json(text: str) -> bytes:
    # json.dumps' default separators, as the Azure SDK writes it (the section 6 vector).
    return json.dumps({"AttestationPolicy": b64url_encode(text.encode("utf-8"))}).encode("utf-8")


def unsigned_policy_jws(text: str) -> str:
    """The unsigned (``alg: none``) JWS for ``text``, byte-identical to the Azure SDK's."""
    return "eyJhbGciOiJub25lIn0." + b64url_encode(_payload_json(text)) + "."


def _x5c(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def _sign(payload: bytes, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> str:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PolicySignatureError("policy signing needs an RSA private key (RS256)")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise PolicySignatureError("the signing key does not match the certificate's public key")
    return _jws.encode(payload, key, algorithm="RS256", headers={"x5c": [_x5c(cert)], "typ": None})


def sign_policy(text: str, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> str:
    """An RS256 policy JWS for ``text`` with ``cert`` in the ``x5c`` header."""
    return _sign(_payload_json(text), key, cert)


def sign_policy_certificate(
    certificate: x509.Certificate, key: rsa.RSAPrivateKey, signer: x509.Certificate
) -> str:
    """A signer add/remove body: ``{"policyCertificate": JWK}`` signed by ``signer``."""
    jwk = {"kty": "RSA", "x5c": [_x5c(certificate)]}
    return _sign(json.dumps({"policyCertificate": jwk}).encode("utf-8"), key, signer)


# --- reading -------------------------------------------------------------------------------


#: What cryptography raises decoding a certificate lazily (bootwatch.x509read).
_DECODE_ERRORS = DECODE_ERRORS


def _load_cert(b64: object, where: str) -> x509.Certificate:
    """Load one x5c entry and decode now what cryptography decodes lazily.

    Names, extensions and the key are read here so that a hostile certificate is
    refused with a typed error naming the x5c entry, not later with a library error.
    """
    if not isinstance(b64, str):
        raise PolicyDocumentError(f"{where}: expected a base64 DER certificate string")
    try:
        der = base64.b64decode(b64, validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError, x509.InvalidVersion) as exc:
        raise PolicyDocumentError(f"{where}: not a base64 DER X.509 certificate ({exc})") from None
    try:
        read_all_fields(cert)
    except CertificateFieldError as exc:
        if exc.unsupported:
            raise PolicySignatureError(
                f"{where}: the certificate's {exc.part} algorithm is not supported "
                f"({exc.cause}); policy signer certificates carry RSA keys") from None
        raise PolicyDocumentError(f"{where}: {exc}") from None
    return cert


def _chain_from(container: Mapping[str, Any], where: str) -> list[x509.Certificate]:
    x5c = container.get("x5c")
    if x5c is not None and not isinstance(x5c, list):
        raise PolicyDocumentError(f"{where}.x5c: expected a list of base64 DER certificates, "
                                  f"not {type(x5c).__name__}")
    if not x5c:
        raise PolicySignatureError(f"{where}.x5c: the signer certificate chain is missing")
    if len(x5c) > MAX_CHAIN:
        raise PolicyDocumentError(f"{where}.x5c: more than {MAX_CHAIN} certificates")
    return [_load_cert(c, f"{where}.x5c[{i}]") for i, c in enumerate(x5c)]


def _header(compact: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(compact)
    except jwt.exceptions.PyJWTError as exc:
        raise PolicyDocumentError(f"JWS header: {exc}") from None
    except RecursionError:
        raise PolicyDocumentError("JWS header: JSON nested too deeply") from None
    if not isinstance(header, dict):  # pragma: no cover - PyJWT guarantees a dict
        raise PolicyDocumentError("JWS header: not a JSON object")
    return header


def _signer_chain(header: Mapping[str, Any]) -> list[x509.Certificate]:
    if "x5c" in header:
        return _chain_from(header, "header")
    jwk = header.get("jwk")
    if isinstance(jwk, Mapping):
        return _chain_from(jwk, "header.jwk")
    raise PolicySignatureError("signed JWS without a signer certificate (header x5c or jwk.x5c)")


def _is_ca(cert: x509.Certificate) -> bool:
    """Whether ``cert`` says it is a CA; undecodable extensions count as no (fail closed)."""
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
    except _DECODE_ERRORS:
        return False


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` signed ``child``; any failure (bad key, unknown algorithm) is no."""
    try:
        child.verify_directly_issued_by(issuer)
    except (*_DECODE_ERRORS, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _check_trust(chain: list[x509.Certificate], trusted: Sequence[x509.Certificate]) -> None:
    """The leaf must be a trusted certificate or chain (through x5c) to one that is a CA."""
    trusted_der = {t.public_bytes(serialization.Encoding.DER) for t in trusted}
    for i, cert in enumerate(chain):
        if cert.public_bytes(serialization.Encoding.DER) in trusted_der:
            return
        for anchor in trusted:
            if _is_ca(anchor) and _issued_by(cert, anchor):
                return
        if i + 1 >= len(chain):
            break
        issuer = chain[i + 1]
        if not (_is_ca(issuer) and _issued_by(cert, issuer)):
            raise UntrustedSignerError(
                f"x5c[{i}] is not issued by x5c[{i + 1}] (or x5c[{i + 1}] is not a CA)"
            )
    subject = chain[0].subject.rfc4514_string()
    raise UntrustedSignerError(
        f"the policy signer {subject!r} is not a trusted policy signer and does not chain to one"
    )


def _verify_rs256(compact: str, header: Mapping[str, Any]) -> tuple[bytes, x509.Certificate]:
    chain = _signer_chain(header)
    key = chain[0].public_key()  # cannot fail: _load_cert read it
    if not isinstance(key, rsa.RSAPublicKey):
        raise PolicySignatureError("the signer certificate's key is not RSA (RS256 needs RSA)")
    if key.key_size < MIN_RSA_BITS:
        raise PolicySignatureError(
            f"the signer key has {key.key_size} bits; at least {MIN_RSA_BITS} are required"
        )
    try:
        decoded = _jws.decode_complete(compact, key=key, algorithms=list(_SIGNED_ALGS))
    except jwt.exceptions.InvalidSignatureError:
        raise PolicySignatureError(
            "the JWS signature does not verify with the x5c signer certificate"
        ) from None
    except jwt.exceptions.PyJWTError as exc:
        raise PolicyDocumentError(f"JWS: {exc}") from None
    except RecursionError:
        raise PolicyDocumentError("JWS: JSON nested too deeply") from None
    payload = decoded["payload"]
    assert isinstance(payload, bytes)
    return payload, chain[0]


def _payload_object(payload: bytes) -> dict[str, Any]:
    if payload == b"":
        return {}
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PolicyDocumentError(f"JWS payload is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise PolicyDocumentError("JWS payload is not a JSON object")
    return obj


def _check_compact(compact: str) -> None:
    if len(compact) > MAX_DOCUMENT_CHARS:
        raise PolicyDocumentError(f"JWS is longer than {MAX_DOCUMENT_CHARS} characters")
    if not _COMPACT.fullmatch(compact):
        raise PolicyDocumentError("not a compact JWS (three base64url parts joined by '.')")


def verify_signed_jws(compact: str, trusted_signers: Sequence[x509.Certificate]) -> VerifiedJws:
    """Verify an RS256 JWS signed by (a certificate chaining to) one of ``trusted_signers``.

    Used for signed policies and for signer add/remove bodies. An unsigned JWS, an empty
    ``trusted_signers`` or an untrusted signer is a PolicySignatureError.
    """
    _check_compact(compact)
    if not trusted_signers:
        raise PolicySignatureError("no trusted policy signers are configured")
    header = _header(compact)
    alg = header.get("alg")
    if alg not in _SIGNED_ALGS:
        raise PolicySignatureError(f"JWS alg {alg!r} is not accepted; a signed body needs RS256")
    payload, signer = _verify_rs256(compact, header)
    _check_trust(_signer_chain(header), trusted_signers)
    return VerifiedJws(header, _payload_object(payload), signer)


def policy_certificate_from_payload(payload: Mapping[str, Any]) -> x509.Certificate:
    """The certificate a signer add/remove body carries (``policyCertificate`` JWK).

    ``x-ms-policyCertificate`` and the older ``maa-policyCertificate`` are read too
    (troubleshoot-guide.md names both).
    """
    for name in ("policyCertificate", "x-ms-policyCertificate", "maa-policyCertificate"):
        jwk = payload.get(name)
        if jwk is not None:
            if not isinstance(jwk, Mapping):
                raise PolicyDocumentError(f"{name}: expected a JWK object")
            return _chain_from(jwk, name)[0]
    raise PolicyDocumentError("payload has no policyCertificate JWK")


def _policy_text(payload: dict[str, Any], tolerances: list[str]) -> str:
    if not payload:
        return ""
    if "AttestationPolicy" not in payload:
        raise PolicyDocumentError("JWS payload has no AttestationPolicy claim")
    value = payload["AttestationPolicy"]
    if not isinstance(value, str):
        raise PolicyDocumentError("AttestationPolicy: expected a base64url string")
    if value == "":
        return ""
    if not _B64URL.fullmatch(value):
        tolerances.append("plain-text-policy-claim")
        return value
    try:
        raw = b64url_decode(value)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise PolicyDocumentError(f"AttestationPolicy: not base64url UTF-8 text ({exc})") from None


def _check_text(text: str) -> None:
    """Refuse NUL and lone surrogates in an upload or the policy it carries (a JSON escape
    in a JWS payload can produce them): stored, hashed or re-encoded, they would fail
    later with no typed error."""
    try:
        check_policy_text(text)
    except PolicyParsingError as exc:
        raise PolicyDocumentError(f"policy upload: {exc}") from None


def parse_policy_document(
    body: str | bytes,
    *,
    trusted_signers: Sequence[x509.Certificate] = (),
    require_signed: bool = False,
) -> PolicyDocument:
    """Decode an upload body; verify its signature; check its signer when signers are given.

    ``require_signed`` (isolated trust model) refuses plain text and ``alg: none``. With
    ``trusted_signers``, a signed document's signer must be one of them or chain to one.
    The policy text itself is not compiled here (callers run ``compile_policy``).
    """
    if isinstance(body, bytes):
        if len(body) > MAX_DOCUMENT_CHARS:
            raise PolicyDocumentError(f"policy upload is longer than {MAX_DOCUMENT_CHARS} bytes")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyDocumentError(f"policy upload is not UTF-8 ({exc})") from None
    if len(body) > MAX_DOCUMENT_CHARS:
        raise PolicyDocumentError(f"policy upload is longer than {MAX_DOCUMENT_CHARS} characters")
    _check_text(body)
    compact = body.strip()
    if not _COMPACT.fullmatch(compact):
        if require_signed:
            raise PolicySignatureError(
                "this provider accepts only signed policies (a JWS signed by a trusted signer)"
            )
        return PolicyDocument(body, None, None, policy_token_hash(unsigned_policy_jws(body)))
    header = _header(compact)
    alg = header.get("alg")
    tolerances: list[str] = []
    signer: x509.Certificate | None = None
    if alg == "none":
        if require_signed:
            raise PolicySignatureError(
                "this provider accepts only signed policies; the JWS has alg 'none'"
            )
        if not compact.endswith("."):
            raise PolicyDocumentError("a JWS with alg 'none' must have an empty signature")
        try:
            payload = _jws.decode_complete(compact, options={"verify_signature": False})["payload"]
        except jwt.exceptions.PyJWTError as exc:
            raise PolicyDocumentError(f"JWS: {exc}") from None
    elif alg in _SIGNED_ALGS:
        if alg == "RSA256":
            tolerances.append("alg-RSA256")
        payload, signer = _verify_rs256(compact, header)
        if trusted_signers:
            _check_trust(_signer_chain(header), trusted_signers)
    else:
        raise PolicySignatureError(
            f"JWS alg {alg!r} is not accepted; use 'none' (unsigned) or 'RS256'"
        )
    text = _policy_text(_payload_object(payload), tolerances)
    _check_text(text)
    return PolicyDocument(text, compact, signer, policy_token_hash(compact), tuple(tolerances))
