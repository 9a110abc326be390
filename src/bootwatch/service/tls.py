"""Development TLS: a local CA and a server certificate generated on first run.

Files in ``<data_dir>/tls/``: ``dev-ca.pem`` (give it to clients: ``--ca`` /
``connection_verify``), ``server.pem`` (leaf + CA chain) and ``server.key``
(mode 0600).  The server certificate names localhost, 127.0.0.1, ::1 and the
configured host.  Real deployments pass ``--cert/--key``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bootwatch.service.db import utcnow
from bootwatch.x509build import key_usage

__all__ = [
    "VALIDITY",
    "TlsFiles",
    "ensure_dev_certificate",
]

VALIDITY = timedelta(days=825)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def ensure_dev_certificate(data_dir: Path, hosts: tuple[str, ...] = ()) -> TlsFiles:
    """Create (once) and return the development CA and server certificate."""
    tls = Path(data_dir) / "tls"
    files = TlsFiles(tls / "server.pem", tls / "server.key", tls / "dev-ca.pem")
    if files.cert.exists() and files.key.exists() and files.ca is not None and files.ca.exists():
        return files
    tls.mkdir(parents=True, exist_ok=True)
    now = utcnow()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bootwatch development CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            key_usage("key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    ips = {"127.0.0.1", "::1"}
    for h in hosts:
        try:
            ips.add(str(ipaddress.ip_address(h)))
        except ValueError:
            if h and h != "localhost":
                names.append(x509.DNSName(h))
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_private(
        files.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    files.cert.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    assert files.ca is not None
    files.ca.write_bytes(ca.public_bytes(pem))
    return files
