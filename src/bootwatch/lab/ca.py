"""The lab's own certificate authority: a root and an issuer, made with ``cryptography``.

Lab vTPMs get EK and AIK certificates the way Azure's vTPMs do (EK cert in NV
``0x01C00002``, AIK cert in NV ``0x01C101D0``), but from this CA, so a verifier
can be given ``root.pem`` as its only trust anchor.  The keys live in the lab
folder (mode 0600): the lab is a test bench, not a production PKI.
"""

from __future__ import annotations

import datetime
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from bootwatch.errors import LabError
from bootwatch.x509build import key_usage

__all__ = [
    "EKU_AIK_CERTIFICATE",
    "EKU_EK_CERTIFICATE",
    "LabCa",
    "load_or_create_ca",
]

#: TCG EKU for an EK certificate (tcg-kp-EKCertificate).
EKU_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
#: TCG EKU for an AIK certificate (tcg-kp-AIKCertificate), as on Azure's AIK certificates.
EKU_AIK_CERTIFICATE = ObjectIdentifier("2.23.133.8.3")

_ROOT_CERT = "root.pem"
_ROOT_KEY = "root.key"
_ISSUER_CERT = "issuer.pem"
_ISSUER_KEY = "issuer.key"
_ANCHORS = "trust-anchors.pem"
_CERT_DAYS = 3650
_LEAF_DAYS = 825


@dataclass(frozen=True)
class LabCa:
    """A loaded lab CA: root (the trust anchor) and the issuer that signs VM certificates."""

    path: Path
    root_cert: x509.Certificate
    issuer_cert: x509.Certificate
    issuer_key: ec.EllipticCurvePrivateKey

    @property
    def root_cert_path(self) -> Path:
        """PEM file of the root certificate: the trust anchor to give a verifier."""
        return self.path / _ROOT_CERT

    @property
    def trust_anchors_path(self) -> Path:
        """PEM bundle (issuer, then root) to give a verifier as its trust anchors.

        AzureGuest requests carry only the AIK leaf, so a verifier needs the
        issuer too; Azure's own leaf certificates likewise come from an
        intermediate ("Global Virtual TPM CA").
        """
        return self.path / _ANCHORS

    @property
    def chain_pem(self) -> bytes:
        """Issuer then root, PEM: what a relying party needs besides the leaf."""
        return self.issuer_cert.public_bytes(
            serialization.Encoding.PEM
        ) + self.root_cert.public_bytes(serialization.Encoding.PEM)

    def issue_ek_cert(self, public_key: rsa.RSAPublicKey, vm_name: str) -> x509.Certificate:
        """An EK certificate (EKU 2.23.133.8.1, keyEncipherment) for a lab vTPM's RSA EK."""
        return self._issue(
            public_key,
            f"{vm_name} EK",
            None,
            key_usage("key_encipherment"),
            EKU_EK_CERTIFICATE,
        )

    def issue_aik_cert(
        self, public_key: rsa.RSAPublicKey, vm_name: str, vm_id: str | None
    ) -> x509.Certificate:
        """An AIK certificate (EKU 2.23.133.8.3, digitalSignature) naming the VM.

        The subject CN is the VM id when given (Azure puts the VM id GUID there),
        the VM name otherwise; the organizational unit always carries the name.
        """
        return self._issue(
            public_key,
            vm_id or vm_name,
            vm_name,
            key_usage("digital_signature"),
            EKU_AIK_CERTIFICATE,
        )

    def _issue(
        self,
        public_key: rsa.RSAPublicKey,
        common_name: str,
        unit: str | None,
        usage: x509.KeyUsage,
        eku: ObjectIdentifier,
    ) -> x509.Certificate:
        attrs = [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bootwatch lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
        if unit is not None:
            attrs.insert(1, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.issuer_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuer_key.public_key()),
                critical=False,
            )
        )
        return builder.sign(self.issuer_key, hashes.SHA256())


def load_or_create_ca(path: Path, *, label: str = "bootwatch lab") -> LabCa:
    """Load the CA kept in ``path``, creating root and issuer on first use.

    ``label`` names the CA in its subjects: the lab keeps two, the AIK-issuing one (as
    Azure's vTPM CA) and ``bootwatch lab EK manufacturer`` (as a TPM maker's EK CA).
    """
    path.mkdir(parents=True, exist_ok=True)
    files = [path / n for n in (_ROOT_CERT, _ROOT_KEY, _ISSUER_CERT, _ISSUER_KEY)]
    if not all(f.is_file() for f in files):
        _create(path, label)
    try:
        root = x509.load_pem_x509_certificate((path / _ROOT_CERT).read_bytes())
        issuer = x509.load_pem_x509_certificate((path / _ISSUER_CERT).read_bytes())
        key = serialization.load_pem_private_key((path / _ISSUER_KEY).read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise LabError(f"lab CA in {path} cannot be read: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise LabError(f"lab CA issuer key in {path} is not an EC key")
    ca = LabCa(path=path, root_cert=root, issuer_cert=issuer, issuer_key=key)
    if not ca.trust_anchors_path.is_file():
        ca.trust_anchors_path.write_bytes(ca.chain_pem)
    return ca


def _create(path: Path, label: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    tag = uuid.uuid4().hex[:8]
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bootwatch lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{label} root CA {tag}"),
        ]
    )
    ca_usage = key_usage("key_cert_sign", "crl_sign")
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA384())
    )
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    issuer = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bootwatch lab"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"{label} issuer {tag}"),
                ]
            )
        )
        .issuer_name(root_name)
        .public_key(issuer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(issuer_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    _write_private(path / _ROOT_KEY, root_key)
    _write_private(path / _ISSUER_KEY, issuer_key)
    (path / _ISSUER_CERT).write_bytes(issuer.public_bytes(pem))
    # the root is written last: its presence marks a complete CA
    (path / _ROOT_CERT).write_bytes(root.public_bytes(pem))


def _write_private(file: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
