"""Encryption at rest of the providers' private signing keys.

AES-256-GCM with a 32-byte key from the settings (hex or base64) or, when
none is configured, one generated into ``<data_dir>/at-rest.key`` with mode
0600 on first use.  Each blob is ``nonce(12) || ciphertext || tag`` and is
bound to its row by the associated data (the key id), so a blob copied to
another row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bootwatch.errors import ConfigError, CryptoError

__all__ = [
    "KEY_FILE",
    "NONCE_BYTES",
    "Sealer",
    "load_or_create_key",
]

KEY_FILE = "at-rest.key"
NONCE_BYTES = 12


def _decode_key(value: str) -> bytes:
    value = value.strip()
    raw: bytes | None = None
    if len(value) == 64:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            raw = None
        if raw is not None and len(raw) != 32:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raw = None
    if raw is None or len(raw) != 32:
        raise ConfigError("at_rest_key must be 32 bytes as 64 hex digits or base64")
    return raw


def load_or_create_key(configured: str, data_dir: Path) -> bytes:
    """The at-rest key: from the settings, else from (or newly into) the data dir."""
    if configured:
        return _decode_key(configured)
    path = Path(data_dir) / KEY_FILE
    if path.exists():
        mode = path.stat().st_mode & 0o077
        if mode:
            raise ConfigError(f"{path}: readable by group/others (mode {oct(mode)}); chmod 600")
        return _decode_key(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    return _create_key_file(path)


def _create_key_file(path: Path) -> bytes:
    """Write a new key to ``path`` unless a concurrent start-up did first; the key in it.

    Processes starting together on a new data dir race here.  The key is written whole
    to a private temporary file and then linked into place (atomic, refused when the
    name exists), so a peer never reads a half-written key file, and the loser of the
    race reads the winner's key instead of failing.
    """
    key = AESGCM.generate_key(bit_length=256)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(8).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex())
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _decode_key(path.read_text())
    finally:
        tmp.unlink(missing_ok=True)
    return key


class Sealer:
    """Encrypts and decrypts blobs under the at-rest key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("at-rest key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, blob: bytes, *, context: str) -> bytes:
        if len(blob) <= NONCE_BYTES + 16:
            raise CryptoError(f"encrypted key for {context!r} is truncated")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode())
        except InvalidTag as exc:
            raise CryptoError(
                f"cannot decrypt the signing key {context!r}: wrong at-rest key or corrupted row"
            ) from exc
