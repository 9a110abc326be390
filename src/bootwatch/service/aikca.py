"""Each provider's AIK-issuing CA: created on first use, key encrypted at rest.

Why a CA per provider: a provider vouches for the TPMs that enrolled with it, and only
for those, so its AIK certificates must chain to a key only it holds.  The CA key is
ECDSA P-256, stored like the token-signing keys (AES-256-GCM under the at-rest key,
bound to the row by its context string), and the CA certificate is self-signed: it is
the trust anchor the provider adds for itself, and what relying parties download with
the chain of round two.

Issued certificates carry what the AzureGuest path reads (subject CN = the VM id GUID,
EKU tcg-kp-AIKCertificate, keyUsage digitalSignature) plus the SHA-256 of the EK
certificate the enrolment was proven against, in :data:`EK_CERT_HASH_OID`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bootwatch.errors import CryptoError, StorageError
from bootwatch.service.atrest import Sealer
from bootwatch.service.models import AikCaRow
from bootwatch.x509build import key_usage

__all__ = ["CA_VALIDITY", "EK_CERT_HASH_OID", "AikCa", "issue_aik_certificate", "load_aik_ca"]

#: Extension carrying SHA-256(EK certificate DER) as an OCTET STRING.  An OID under the
#: UUID arc 2.25 (ITU-T X.667), so it needs no registration and collides with nothing.
EK_CERT_HASH_OID = x509.ObjectIdentifier("2.25.253036590925296064512349315458384516921")
#: TCG AIK certificate purpose (tcg-kp-AIKCertificate)
TCG_KP_AIK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.3")
CA_VALIDITY = timedelta(days=3650)


@dataclass(frozen=True)
class AikCa:
    """A provider's loaded AIK CA."""

    provider: str
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


def _context(provider: str) -> str:
    return f"aik-ca:{provider}"


def _new_ca(provider: str, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bootwatch"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, provider),
        x509.NameAttribute(NameOID.COMMON_NAME, f"bootwatch AIK CA {provider}"),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _from_row(sealer: Sealer, row: AikCaRow) -> AikCa:
    der = sealer.open(row.private_key_enc, context=_context(row.provider))
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CryptoError(f"the AIK CA key of provider {row.provider!r} is not an EC key")
    return AikCa(row.provider, x509.load_der_x509_certificate(row.cert_der), key)


def load_aik_ca(session: Session, sealer: Sealer, provider: str, now: datetime, *,
                create: bool) -> AikCa | None:
    """The provider's AIK CA; created (and committed by the caller) when ``create``."""
    row = session.get(AikCaRow, provider)
    if row is not None:
        return _from_row(sealer, row)
    if not create:
        return None
    key, cert = _new_ca(provider, now)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    row = AikCaRow(provider=provider, cert_der=cert.public_bytes(serialization.Encoding.DER),
                   private_key_enc=sealer.seal(der, context=_context(provider)),
                   created_at=now)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another worker created it first: use theirs
        existing = session.get(AikCaRow, provider)
        if existing is None:
            raise StorageError(f"the AIK CA of {provider!r} could not be stored") from None
        return _from_row(sealer, existing)
    return AikCa(provider, cert, key)


def issue_aik_certificate(ca: AikCa, aik_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
                          *, vm_id: str, ek_cert_sha256: bytes, now: datetime,
                          validity: timedelta) -> x509.Certificate:
    """An AIK certificate for ``vm_id`` (already verified by the enrolment)."""
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bootwatch"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ca.provider),
        x509.NameAttribute(NameOID.COMMON_NAME, vm_id),
    ])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(aik_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage("digital_signature"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([TCG_KP_AIK_CERTIFICATE]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca.private_key.public_key()), critical=False)
        .add_extension(x509.UnrecognizedExtension(
            EK_CERT_HASH_OID, b"\x04" + bytes([len(ek_cert_sha256)]) + ek_cert_sha256),
            critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
