"""``bootwatch release``: make a release key, sign an agent wheel, publish it to a monitor.

The private key never leaves the machine that signs; the monitor and the
agents get only the public key (the agent's ``[upgrade] release_public_key``,
the monitor's trusted release keys).  The monitor's admin token is read from
``BOOTWATCH_MONITOR_TOKEN``, never from the command line (argv is visible to
every user of the machine).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import click

from bootwatch.cli._files import read_limited
from bootwatch.errors import ConfigError, InputError, ServiceError, TransportError
from bootwatch.tlsverify import tls_verify

__all__ = ["command"]

_MAX_WHEEL = 64 * 1024 * 1024
_TOKEN_ENV = "BOOTWATCH_MONITOR_TOKEN"  # noqa: S105 - the variable name, not a secret


@click.group("release")
def command() -> None:
    """Agent releases: signing keys, signed manifests, publishing to a monitor."""


@command.command("keygen")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for release-key.pem (private, 0600) and release-key.pub.pem.")
@click.option("--alg", type=click.Choice(["ed25519", "p256"]), default="ed25519",
              show_default=True, help="Ed25519 or ECDSA P-256.")
def keygen(out_dir: Path, alg: str) -> None:
    """Create a release signing key pair (never overwrites an existing key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from bootwatch.protocol.release import PrivateReleaseKey, key_id

    key: PrivateReleaseKey = (
        ed25519.Ed25519PrivateKey.generate() if alg == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path = out_dir / "release-key.pem"
    public_path = out_dir / "release-key.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a release key")
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)
    click.echo(f"wrote {private_path} (keep it offline) and {public_path}")
    click.echo(f"key id {key_id(key.public_key())}")


def _wheel_version(wheel: Path, data: bytes) -> str:
    """The version the wheel's own METADATA states; it must match its file name."""
    import io

    from bootwatch.protocol.release import parse_version, wheel_file_name

    match = re.match(r"^bootwatch-([^-]+)-py3-none-any\.whl$", wheel.name)
    if match is None:
        raise InputError(f"{wheel}: not a pure-Python bootwatch wheel file name")
    named = str(parse_version(match.group(1), f"{wheel.name} (file name)"))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            metas = [n for n in zf.namelist()
                     if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if len(metas) != 1:
                raise InputError(f"{wheel}: expected one *.dist-info/METADATA, found "
                                 f"{len(metas)}")
            meta = zf.read(metas[0]).decode("utf-8", "replace")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise InputError(f"{wheel}: not a readable bootwatch wheel: {exc}") from None
    stated = next(
        (line.split(":", 1)[1].strip() for line in meta.splitlines()
         if line.startswith("Version:")), None,
    )
    if stated is None or str(parse_version(stated, "METADATA Version")) != named:
        raise InputError(f"{wheel}: METADATA says version {stated!r}, the file name {named}")
    if wheel.name != wheel_file_name(named):
        raise InputError(f"{wheel}: expected the normalised name {wheel_file_name(named)}")
    return named


@command.command("sign")
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The release private key (PEM).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the signed manifest (JSON).")
@click.option("--min-agent-version", default=None,
              help="Only agents at this version or later may take the release.")
@click.option("--max-agent-version", default=None,
              help="Only agents up to this version may take the release.")
def sign(
    wheel: Path, key_file: Path, out: Path, min_agent_version: str | None,
    max_agent_version: str | None,
) -> None:
    """Write the signed manifest of WHEEL (version, size, SHA-256) to --out."""
    from bootwatch.protocol.release import (
        ReleaseManifest,
        key_id,
        load_private_key,
        parse_version,
        sign_release,
    )

    data = read_limited(wheel, "wheel", _MAX_WHEEL)
    version = _wheel_version(wheel, data)
    key = load_private_key(read_limited(key_file, "release key", 64 * 1024), str(key_file))
    manifest = ReleaseManifest(
        version=version,
        wheel=wheel.name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        published_at=datetime.now(UTC).replace(microsecond=0),
        key_id=key_id(key.public_key()),
        min_agent_version=(
            str(parse_version(min_agent_version, "--min-agent-version"))
            if min_agent_version else None
        ),
        max_agent_version=(
            str(parse_version(max_agent_version, "--max-agent-version"))
            if max_agent_version else None
        ),
    )
    out.write_bytes(sign_release(manifest, key))
    click.echo(f"signed {wheel.name} ({manifest.size} bytes, sha256 {manifest.sha256}) -> {out}")


@command.command("publish")
@click.argument("wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--manifest", "manifest_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The signed manifest from 'bootwatch release sign'.")
@click.option("--monitor", "monitor_url", required=True, help="The monitor's base URL.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CA bundle for the monitor's TLS certificate.")
def publish(wheel: Path, manifest_file: Path, monitor_url: str, ca: Path | None) -> None:
    """Upload WHEEL and its signed manifest to the monitor (admin token from the environment)."""
    import httpx

    from bootwatch.protocol.release import decode_signed_release

    token = os.environ.get(_TOKEN_ENV, "")
    if not token:
        raise ConfigError(f"set {_TOKEN_ENV} to the monitor's admin token (never on argv)")
    signed_body = read_limited(manifest_file, "signed manifest", 16 * 1024)
    decode_signed_release(signed_body)  # strict shape check before anything is sent
    data = read_limited(wheel, "wheel", _MAX_WHEEL)
    body = json.dumps({
        "signed_release": json.loads(signed_body),
        "wheel": base64.b64encode(data).decode("ascii"),
    }).encode()
    url = monitor_url.rstrip("/") + "/api/v1/agent/releases"
    verify = tls_verify(str(ca) if ca else "")
    try:
        resp = httpx.post(
            url, content=body, verify=verify, timeout=120.0,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    except httpx.HTTPError as exc:
        raise TransportError(f"POST {url}: {exc}", step="tcp_connect") from None
    if resp.status_code not in (200, 201):
        try:
            problem = resp.json()
            detail = str(problem.get("detail", resp.text[:300]))
            code = str(problem.get("code", "error"))
        except ValueError:
            detail, code = resp.text[:300], "error"
        raise ServiceError(detail, status=resp.status_code, error_code=code)
    try:
        result = resp.json()
    except ValueError:
        raise ServiceError(f"{url} answered {resp.status_code} with a body that is not JSON: "
                           "is it the monitor?", status=resp.status_code,
                           error_code="NotJson") from None
    verb = "published" if result.get("created") else "already published (identical)"
    click.echo(f"{verb}: bootwatch {result.get('version')} at {url}")
