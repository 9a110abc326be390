"""Token-signing keys: generation, storage, rotation, and the token signer.

Each provider signs with an RSA-2048 key held in a self-signed certificate
whose subject CN is the provider's name (MAA uses the provider URI; ours is
reachable at several URLs, so the name is the stable part).  The key id is
the base64url SHA-256 thumbprint of the certificate.  Rotation creates a new
active key and keeps the previous one published in ``/certs`` for the overlap
window (``Settings.key_overlap_seconds``) so tokens signed just before the
rotation still verify.

A rotation may publish the new key ahead of its first signature (``ahead``): its
row's ``created_at`` is the instant it starts signing, and until then the previous
key signs.  Why: every replica and every verifier must know a key before a token
signed with it reaches them.  Replicas reload within the cache TTL, but a verifier
caches ``/certs`` (the monitor for 5 minutes, refetching an unknown ``kid`` at most
every 10 s) and would refuse valid tokens in between.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from sqlalchemy.orm import Session

from bootwatch.encoding import b64url_encode
from bootwatch.service.atrest import Sealer
from bootwatch.service.db import as_utc
from bootwatch.service.models import SigningKeyRow
from bootwatch.x509build import key_usage

__all__ = [
    "KEY_VALIDITY",
    "TokenSigner",
    "cert_jwk",
    "kid_for",
    "load_private_key",
    "new_signing_key",
    "published_keys",
    "rotate_key",
    "sha256_b64url",
    "signing_key",
    "store_new_key",
]

KEY_VALIDITY = timedelta(days=3650)



def kid_for(cert: x509.Certificate) -> str:
    """base64url SHA-256 of the DER certificate."""
    return b64url_encode(cert.fingerprint(hashes.SHA256()))


#: JWK ``crv`` names of the EC curves (RFC 7518 section 6.2.1.1)
_EC_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def cert_jwk(cert: x509.Certificate, *, kid: str | None = None) -> dict[str, Any]:
    """The JWK MAA publishes for a certificate: kty, kid, x5c, n/e, alg, use.

    Token-signing keys are RSA; policy signers (``GET /certificates``) may be EC CA
    certificates, published as ``kty: EC`` with ``crv``/``x``/``y`` (a ``kty: RSA``
    without ``n``/``e`` is no JWK).  A key type JWK has no name for is published by its
    ``x5c`` alone.
    """
    pub = cert.public_key()
    jwk: dict[str, Any] = {
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    if kid is not None:
        jwk["kid"] = kid
    if isinstance(pub, rsa.RSAPublicKey):
        numbers = pub.public_numbers()
        jwk["kty"] = "RSA"
        jwk["n"] = b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
        jwk["e"] = b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big"))
        jwk["alg"] = "RS256"
        jwk["use"] = "sig"
    elif isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name in _EC_CURVES:
        point = pub.public_numbers()
        size = (pub.curve.key_size + 7) // 8
        jwk["kty"] = "EC"
        jwk["crv"] = _EC_CURVES[pub.curve.name]
        jwk["x"] = b64url_encode(point.x.to_bytes(size, "big"))
        jwk["y"] = b64url_encode(point.y.to_bytes(size, "big"))
    return {"kty": jwk.pop("kty"), **jwk} if "kty" in jwk else jwk


def new_signing_key(provider: str, now: datetime) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A fresh RSA-2048 key in a self-signed certificate naming the provider."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"bootwatch attestation provider {provider}"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, provider),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + KEY_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            key_usage("digital_signature"),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def store_new_key(session: Session, sealer: Sealer, provider: str, now: datetime,
                  *, signs_from: datetime | None = None) -> str:
    """Generate a key for ``provider``, store it encrypted, make it the active one
    (signing from ``signs_from``, default ``now``; published at once)."""
    key, cert = new_signing_key(provider, now)
    kid = kid_for(cert)
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    session.add(
        SigningKeyRow(
            kid=kid,
            provider=provider,
            cert_der=cert.public_bytes(serialization.Encoding.DER),
            private_key_enc=sealer.seal(der, context=kid),
            created_at=now if signs_from is None else signs_from,
            active=True,
            retire_at=None,
        )
    )
    return kid


def rotate_key(
    session: Session, sealer: Sealer, provider: str, now: datetime, overlap: timedelta,
    *, ahead: timedelta = timedelta(0),
) -> tuple[str, list[str]]:
    """New key, published now and signing from ``now + ahead``; the previous keys sign
    until then and stay published for ``overlap`` after it.

    Returns (new kid, kids of the keys put into their overlap window).
    """
    start = now + ahead
    retired: list[str] = []
    for row in session.scalars(
        select(SigningKeyRow).where(SigningKeyRow.provider == provider, SigningKeyRow.active)
    ):
        row.active = False
        row.retire_at = start + overlap
        retired.append(row.kid)
    session.flush()
    return store_new_key(session, sealer, provider, now, signs_from=start), retired


def signing_key(rows: list[SigningKeyRow], now: datetime) -> SigningKeyRow | None:
    """Of the published ``rows``, the key that signs at ``now``: the newest whose signing
    has begun (a key published ahead waits; the one before it signs meanwhile)."""
    started = [r for r in rows if as_utc(r.created_at) <= now]
    return max(started, key=lambda r: as_utc(r.created_at), default=None)


def published_keys(session: Session, provider: str, now: datetime) -> list[SigningKeyRow]:
    """Keys listed in /certs: the active one and those still inside their overlap window."""
    rows = session.scalars(
        select(SigningKeyRow)
        .where(SigningKeyRow.provider == provider)
        .order_by(SigningKeyRow.created_at.desc())
    ).all()
    return [r for r in rows if r.active or (r.retire_at is not None and as_utc(r.retire_at) > now)]


@dataclass(frozen=True)
class TokenSigner:
    """Signs RS256 JWTs with a provider's current key.

    Headers: ``alg`` RS256, ``typ`` JWT, ``kid`` (listed in /certs) and ``jku``
    (the provider's /certs URL).  ``issuer`` is the provider's base URL; put it
    in the ``iss`` claim (the signer does not add claims).
    """

    kid: str
    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey
    issuer: str

    @property
    def jku(self) -> str:
        return f"{self.issuer}/certs"

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Compact RS256 JWS of ``claims`` (a JSON-serialisable mapping)."""
        return jwt.encode(
            dict(claims),
            self.private_key,
            algorithm="RS256",
            headers={"kid": self.kid, "jku": self.jku, "typ": "JWT"},
        )

    def with_issuer(self, issuer: str) -> TokenSigner:
        return TokenSigner(self.kid, self.certificate, self.private_key, issuer)


def load_private_key(sealer: Sealer, row: SigningKeyRow) -> rsa.RSAPrivateKey:
    der = sealer.open(row.private_key_enc, context=row.kid)
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):  # pragma: no cover - we only store RSA
        raise TypeError("stored signing key is not RSA")
    return key


def sha256_b64url(data: bytes) -> str:
    return b64url_encode(hashlib.sha256(data).digest())
