"""``bootwatch example``: small inputs for trying the other commands.

The README's usage blocks must run as written on a fresh clone, so every file they
read is either in the shared corpus or made by a command shown beside it:

* ``bootwatch example claims`` prints a claims list for ``policy eval --claims``:
  the ``azurevm`` claims of a Trusted Launch VM that the default AzureGuest policy
  permits, plus the claims the published TPM sample policies test.  Claim names come
  from :mod:`bootwatch.protocol.token` (one vocabulary); the values are an example
  input, not a verdict.
* ``bootwatch example signer --key K --cert C`` writes a fresh RSA key (mode 0600)
  and a self-signed certificate for it: a policy signer for ``policy sign`` and
  ``provider create --signer``.  It refuses to overwrite existing files.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import click

from bootwatch.errors import InputError
from bootwatch.protocol import token as t

__all__ = ["command", "example_claims", "write_signer"]

#: Validity of an example signer certificate.
SIGNER_DAYS = 365


def example_claims(*, secure_boot: bool = True) -> list[dict[str, Any]]:
    """A claims list (``[{"type", "value"}]``) of a Linux Trusted Launch VM.

    With ``secure_boot=False`` the VM is one booted with Secure Boot off: the
    default AzureGuest policy denies it on ``secureboot``.
    """
    booleans: dict[str, bool] = {name: True for name in t.DEFAULT_POLICY_BOOLEANS}
    booleans[t.SECUREBOOT] = secure_boot
    claims: list[dict[str, Any]] = [{"type": k, "value": v} for k, v in booleans.items()]
    claims += [
        {"type": t.IS_WINDOWS, "value": False},
        {"type": t.OSTYPE, "value": "Linux"},
        {"type": t.OSDISTRO, "value": "Ubuntu"},
        {"type": t.OSVERSION_MAJOR, "value": 22},
        {"type": t.OSVERSION_MINOR, "value": 4},
        {"type": t.ATTESTED_PCRS, "value": list(range(8))},
        {"type": t.VMID, "value": "00000000-0000-4000-8000-000000000001"},
    ]
    # the TPM sample policies (tpm-sample-policies__*) test these claim types
    for name in ("aikValidated", "bootDebuggingDisabled", "notSafeMode", "notWinPE",
                 "vbsEnabled"):
        claims.append({"type": name, "value": True})
    claims.append({"type": "secureBootEnabled", "value": secure_boot})
    return claims


def write_signer(key_path: Path, cert_path: Path, subject: str) -> None:
    """Write a new RSA-2048 key (0600) and a self-signed signer certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from bootwatch.x509build import key_usage

    for path in (key_path, cert_path):
        if path.exists():
            raise InputError(f"{path}: already exists; not overwriting it")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SIGNER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage("digital_signature"), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise InputError(f"cannot write the signer files: {exc}") from None


@click.group("example")
def command() -> None:
    """Small example inputs: a claims list, a policy-signer key and certificate."""


@command.command("claims")
@click.option("--secure-boot-off", is_flag=True,
              help="A VM booted with Secure Boot off (the default policy denies it).")
def claims_cmd(secure_boot_off: bool) -> None:
    """Print a claims list (JSON) for ``bootwatch policy eval --claims``."""
    click.echo(json.dumps(example_claims(secure_boot=not secure_boot_off), indent=2))


@command.command("signer")
@click.option("--key", "key_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the private key (PEM, mode 0600).")
@click.option("--cert", "cert_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the self-signed certificate (PEM).")
@click.option("--subject", default="bootwatch example policy signer", show_default=True,
              help="The certificate's common name.")
def signer_cmd(key_path: Path, cert_path: Path, subject: str) -> None:
    """Write a new policy-signer key and self-signed certificate (never overwrites)."""
    write_signer(key_path, cert_path, subject)
    click.echo(f"wrote {key_path} (private key, 0600) and {cert_path}", err=True)
