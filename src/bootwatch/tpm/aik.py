"""AIK certificates: chain to configured trust anchors and bind to ``AikPub``.

A quote proves only that *some* key signed it; the AIK certificate is what
ties that key to a TPM the operator trusts.  Validation here is deliberately
narrow and explicit (no Web-PKI profile): each link's signature, every
certificate's validity at the given time, CA basicConstraints and keyUsage
on intermediates, the leaf's keyUsage (digitalSignature) and EKU (the TCG
AIK purpose 2.23.133.8.3 when an EKU is present), and the leaf's key equal
to the AIK public area the quote was verified with.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from bootwatch.errors import TpmStructureError
from bootwatch.lru import BoundedLru
from bootwatch.tpm.errors import AikCertificateError
from bootwatch.tpm.public import TpmPublic
from bootwatch.x509read import DECODE_ERRORS, CertificateFieldError, read_all_fields

__all__ = [
    "AIK_CERT_CACHE_SIZE",
    "MAX_CERT_BYTES",
    "MAX_CHAIN_DEPTH",
    "TCG_KP_AIK_CERTIFICATE",
    "VERIFIED_LINK_CACHE_SIZE",
    "AikCache",
    "RevokedAikCertificates",
    "TrustAnchors",
    "VerifiedAikChain",
    "load_aik_certificate",
    "verify_aik_certificate",
]

#: TCG "AIK certificate" extended key usage (tcg-kp-AIKCertificate).
TCG_KP_AIK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.3")
#: Longest chain walked (leaf + intermediates); protects against loops.
MAX_CHAIN_DEPTH = 8
#: Largest DER certificate accepted.
MAX_CERT_BYTES = 16 * 1024
#: What cryptography raises loading a certificate: ValueError, and InvalidVersion (not a
#: ValueError) for a version other than v1/v3.
_LOAD_ERRORS = (ValueError, x509.InvalidVersion)
#: What it raises decoding the lazily read parts (bootwatch.x509read).
_DECODE_ERRORS = DECODE_ERRORS


@dataclass(frozen=True)
class TrustAnchors:
    """Certificates the operator trusts to issue AIK certificates (roots or intermediates)."""

    certificates: tuple[x509.Certificate, ...]

    @classmethod
    def from_pem(cls, pem_blobs: Iterable[bytes]) -> TrustAnchors:
        """Load every certificate from one or more PEM blobs (a bundle, or a folder's files)."""
        certs: list[x509.Certificate] = []
        for blob in pem_blobs:
            if b"-----BEGIN CERTIFICATE-----" not in blob:
                continue
            try:
                loaded = x509.load_pem_x509_certificates(blob)
            except _LOAD_ERRORS as exc:
                raise AikCertificateError("trust_anchor_malformed",
                                          f"a trust-anchor PEM cannot be read: {exc}") from None
            for cert in loaded:
                _check_readable(cert, "a trust-anchor certificate", "trust_anchor_malformed")
            certs.extend(loaded)
        return cls(tuple(certs))

    @cached_property
    def ders(self) -> frozenset[bytes]:
        """The anchors' DER encodings (computed once per set: encoding is not free)."""
        return frozenset(_der(c, None) for c in self.certificates)

    def plus(self, other: TrustAnchors) -> TrustAnchors:
        """Both sets, each certificate once (by DER), this set's order first."""
        seen = self.ders
        extra = tuple(c for c in other.certificates if _der(c, None) not in seen)
        return TrustAnchors(self.certificates + extra) if extra else self


@dataclass(frozen=True)
class RevokedAikCertificates:
    """AIK certificates revoked by their issuer: (issuer name DER, serial) -> reason.

    Checked after the chain is built, so a revoked certificate is reported as
    ``aik_cert_revoked`` rather than as untrusted.
    """

    entries: Mapping[tuple[bytes, int], str]

    def reason(self, cert: x509.Certificate) -> str | None:
        """Why ``cert`` is revoked, or None."""
        if not self.entries:
            return None
        return self.entries.get((cert.issuer.public_bytes(), cert.serial_number))


@dataclass(frozen=True)
class VerifiedAikChain:
    """A leaf AIK certificate and the chain up to a trust anchor, all checked."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuers, nearest first, ending in the anchor

    @property
    def subjects(self) -> tuple[str, ...]:
        """RFC 4514 subjects from leaf to anchor."""
        return (_subject(self.leaf), *(_subject(c) for c in self.chain))


def _check_readable(cert: x509.Certificate, what: str, code: str) -> None:
    """Decode now every part of ``cert`` that is decoded lazily and used later.

    cryptography reads a certificate's outer structure at load time but its names,
    extensions and key only when asked, and raises UnsupportedAlgorithm or one of
    ``_DECODE_ERRORS`` then; doing it here turns those into one typed error at load time.
    """
    try:
        read_all_fields(cert)
    except CertificateFieldError as exc:
        if exc.unsupported:
            raise AikCertificateError(
                code, f"{what} has a {exc.part} algorithm bootwatch does not support "
                f"({exc.cause}); AIK certificates carry RSA or ECC keys") from None
        raise AikCertificateError(code, f"{what}'s {exc.part} cannot be decoded: "
                                  f"{type(exc.cause).__name__}: {exc.cause}") from None


def _spki(key: object) -> bytes:
    assert hasattr(key, "public_bytes")
    out = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert isinstance(out, bytes)
    return out


def _check_time(cert: x509.Certificate, at: datetime, what: str) -> None:
    if at < cert.not_valid_before_utc:
        raise AikCertificateError(
            "aik_cert_not_yet_valid",
            f"{what} {cert.subject.rfc4514_string()} is valid only from "
            f"{cert.not_valid_before_utc.isoformat()}, checked at {at.isoformat()}")
    if at > cert.not_valid_after_utc:
        raise AikCertificateError(
            "aik_cert_expired",
            f"{what} {cert.subject.rfc4514_string()} expired on "
            f"{cert.not_valid_after_utc.isoformat()}, checked at {at.isoformat()}")


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    except _DECODE_ERRORS as exc:  # only a certificate that skipped _check_readable
        raise AikCertificateError("aik_cert_malformed",
                                  f"extensions of {cert.serial_number:x} cannot be decoded: "
                                  f"{exc}") from None


#: Parsed AIK certificates an AikCache keeps.
AIK_CERT_CACHE_SIZE = 1024
#: Verified (certificate, issuer) links an AikCache keeps.
VERIFIED_LINK_CACHE_SIZE = 4096


@dataclass(frozen=True)
class AikCache:
    """What AIK certificate checks may reuse between calls, owned by a verifier.

    A VM presents the same AIK certificate on every attestation: its parse (with its
    extensions decoded), its DER and whether one exact certificate's key signed
    another exact certificate never change.  Only successes are kept; validity times,
    constraints, key usages and revocation are checked on every call.  Bounded, least
    recently used out, thread-safe (see :class:`bootwatch.lru.BoundedLru`).
    """

    certificates: BoundedLru[bytes, x509.Certificate] = field(
        default_factory=lambda: BoundedLru(AIK_CERT_CACHE_SIZE))
    links: BoundedLru[tuple[bytes, bytes], bool] = field(
        default_factory=lambda: BoundedLru(VERIFIED_LINK_CACHE_SIZE))
    ders: BoundedLru[x509.Certificate, bytes] = field(
        default_factory=lambda: BoundedLru(AIK_CERT_CACHE_SIZE))


def load_aik_certificate(der: bytes, cache: AikCache | None = None) -> x509.Certificate:
    """Parse an AIK certificate (DER; PEM is accepted too).

    ``cache``: parses kept per exact bytes (a parsed certificate is immutable).
    Errors are never kept.
    """
    if len(der) > MAX_CERT_BYTES:
        raise AikCertificateError("aik_cert_malformed",
                                  f"certificate is {len(der)} bytes, over {MAX_CERT_BYTES}")
    raw = bytes(der)
    if cache is None:
        return _load_aik_certificate(raw)
    return cache.certificates.get_or_compute(raw, lambda: _load_aik_certificate(raw))


def _load_aik_certificate(der: bytes) -> x509.Certificate:
    if len(der) > MAX_CERT_BYTES:
        raise AikCertificateError("aik_cert_malformed",
                                  f"certificate is {len(der)} bytes, over {MAX_CERT_BYTES}")
    try:
        if der.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(der)
        else:
            cert = x509.load_der_x509_certificate(der)
    except _LOAD_ERRORS as exc:
        raise AikCertificateError("aik_cert_malformed",
                                  f"AIK certificate cannot be parsed: {exc}") from None
    _check_readable(cert, "the AIK certificate", "aik_cert_malformed")
    return cert


def verify_aik_certificate(
    cert_der: bytes | None,
    aik_pub: TpmPublic,
    anchors: TrustAnchors,
    *,
    at: datetime,
    revoked: RevokedAikCertificates | None = None,
    cache: AikCache | None = None,
) -> VerifiedAikChain:
    """Validate the AIK certificate; raise AikCertificateError with a reason code if not.

    Reason codes: ``aik_cert_missing``, ``aik_cert_malformed``, ``aik_pub_malformed``,
    ``aik_cert_key_mismatch``,
    ``aik_cert_not_yet_valid``, ``aik_cert_expired``, ``aik_cert_key_usage``,
    ``aik_cert_eku``, ``no_trust_anchors``, ``aik_cert_untrusted``, ``aik_cert_revoked``.
    ``cache``: the caller's :class:`AikCache` (None: nothing is reused).
    """
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if not cert_der:
        raise AikCertificateError("aik_cert_missing", "the request carries no AIK certificate")
    leaf = load_aik_certificate(cert_der, cache)
    try:
        aik_key = aik_pub.public_key()
    except TpmStructureError as exc:
        raise AikCertificateError("aik_pub_malformed",
                                  f"AikPub is no usable public key, so the AIK certificate "
                                  f"cannot be bound to it: {exc}") from None
    if not hmac.compare_digest(_spki(leaf.public_key()), _spki(aik_key)):
        raise AikCertificateError("aik_cert_key_mismatch",
                                  "the AIK certificate's key is not the key in AikPub")
    _check_time(leaf, at, "AIK certificate")
    ku = _ext(leaf, ExtensionOID.KEY_USAGE)
    if isinstance(ku, x509.KeyUsage) and not ku.digital_signature:
        raise AikCertificateError("aik_cert_key_usage",
                                  "the AIK certificate's keyUsage lacks digitalSignature")
    eku = _ext(leaf, ExtensionOID.EXTENDED_KEY_USAGE)
    if isinstance(eku, x509.ExtendedKeyUsage) and TCG_KP_AIK_CERTIFICATE not in eku:
        raise AikCertificateError("aik_cert_eku",
                                  "the AIK certificate's extendedKeyUsage lacks the TCG AIK "
                                  "purpose 2.23.133.8.3")
    if not anchors.certificates:
        raise AikCertificateError("no_trust_anchors",
                                  "no trust anchors configured: pass --trust-anchors (PEM)")
    anchor_der = anchors.ders
    chain: list[x509.Certificate] = []
    current = leaf
    for _ in range(MAX_CHAIN_DEPTH):
        issuer = _find_issuer(current, anchors.certificates, cache)
        if issuer is None:
            raise AikCertificateError(
                "aik_cert_untrusted",
                f"no trust anchor issued {current.subject.rfc4514_string()} "
                f"(issuer {current.issuer.rfc4514_string()})")
        _check_time(issuer, at, "issuer certificate")
        bc = _ext(issuer, ExtensionOID.BASIC_CONSTRAINTS)
        if isinstance(bc, x509.BasicConstraints) and not bc.ca:
            raise AikCertificateError("aik_cert_untrusted",
                                      f"{issuer.subject.rfc4514_string()} is not a CA")
        iku = _ext(issuer, ExtensionOID.KEY_USAGE)
        if isinstance(iku, x509.KeyUsage) and not iku.key_cert_sign:
            raise AikCertificateError("aik_cert_untrusted",
                                      f"{issuer.subject.rfc4514_string()} may not sign "
                                      "certificates (keyUsage)")
        chain.append(issuer)
        # a pinned intermediate ends the chain unless its own issuer is in the set too
        # (then walk on to that root, so the whole chain is checked and reported)
        if _der(issuer, cache) in anchor_der and (
            issuer.subject == issuer.issuer
            or _find_issuer(issuer, anchors.certificates, cache) is None
        ):
            why = revoked.reason(leaf) if revoked is not None else None
            if why is not None:
                raise AikCertificateError(
                    "aik_cert_revoked",
                    f"the AIK certificate {leaf.subject.rfc4514_string()} (serial "
                    f"{leaf.serial_number:x}) was revoked by its issuer: {why}")
            return VerifiedAikChain(leaf, tuple(chain))
        current = issuer
    raise AikCertificateError("aik_cert_untrusted", "certificate chain too long")


def _find_issuer(
    cert: x509.Certificate, candidates: Iterable[x509.Certificate], cache: AikCache | None
) -> x509.Certificate | None:
    for cand in candidates:
        try:
            if cand.subject != cert.issuer:
                continue
        except (ValueError, KeyError):  # undecodable name (TrustAnchors built directly)
            continue
        if _issued_by(cert, cand, cache):
            return cand
    return None


def _issued_by(cert: x509.Certificate, cand: x509.Certificate, cache: AikCache | None) -> bool:
    """Whether ``cand``'s key signed ``cert`` (any failure means: not this issuer)."""
    if cache is None:
        return _signed_by(cert, cand)
    link = (_der(cert, cache), _der(cand, cache))
    if cache.links.get(link):
        return True
    ok = _signed_by(cert, cand)
    if ok:
        cache.links.put(link, True)
    return ok


def _signed_by(cert: x509.Certificate, cand: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cand)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _der(cert: x509.Certificate, cache: AikCache | None) -> bytes:
    """DER of a certificate (kept in ``cache``: encoding one costs about 20 us)."""
    if cache is None:
        return cert.public_bytes(serialization.Encoding.DER)
    return cache.ders.get_or_compute(
        cert, lambda: cert.public_bytes(serialization.Encoding.DER))


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()
