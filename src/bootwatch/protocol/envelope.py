"""The sealed response envelope of ``POST /attest/AzureGuest`` (maa-protocol 1.3).

MAA does not return the attestation token in the clear: it encrypts the JWT
with AES-256-GCM under a fresh key (AAD ``b"Transport Key"``) and wraps that
key with RSAES-PKCS1-v1_5 to the ephemeral, PCR-bound vTPM key the request
certified.  Only that vTPM, while its PCRs are unchanged, can unwrap the key;
this is what gives the single-round protocol its freshness.

This module is shared by both sides: the service :func:`seal` s and
:func:`encode_token_response` s; the agent :func:`decode_token_response` s,
lets its TPM unwrap ``encrypted_inner_key`` and then calls
:func:`open_with_key` for the AES-GCM step.  The JSON shape is exactly the one
of the spec example (``AttestAzureGuestVm.json``): inner fields standard
base64, the whole JSON base64url in ``{"token": ...}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bootwatch.encoding import b64url_decode, b64url_encode
from bootwatch.errors import CryptoError, ProtocolError
from bootwatch.protocol.jsonread import read_json

__all__ = [
    "AAD",
    "IV_BYTES",
    "KEY_BYTES",
    "MAX_RESPONSE_BYTES",
    "TAG_BYTES",
    "SealedEnvelope",
    "decode_token_response",
    "encode_token_response",
    "open_with_key",
    "seal",
]

#: Additional authenticated data MAA uses for the AES-GCM step.
AAD = b"Transport Key"
#: AES-256 key length in bytes.
KEY_BYTES = 32
#: GCM nonce length MAA uses (bytes).
IV_BYTES = 12
#: GCM tag length (bytes).
TAG_BYTES = 16
#: Upper bound on a token response body; real ones are ~6 KB (tokens grow with claims).
MAX_RESPONSE_BYTES = 1024 * 1024

_PARAMS_FIXED: dict[str, Any] = {
    "BlockMode": "ChainingModeGCM",
    "BlockPadding": "PKCS7",
    "Cipher": "AES",
    "KeySizeInBits": 256,
}


@dataclass(frozen=True)
class SealedEnvelope:
    """One sealed token: ciphertext, wrapped key, IV and GCM tag (all raw bytes).

    Nothing in here is trusted: the tag is checked only by :func:`open_with_key`.
    """

    jwt_ciphertext: bytes
    encrypted_inner_key: bytes
    iv: bytes
    authentication_data: bytes

    def to_json(self) -> dict[str, Any]:
        """The envelope JSON object exactly as MAA writes it (standard base64 fields)."""
        return {
            "Jwt": _b64(self.jwt_ciphertext),
            "EncryptedInnerKey": _b64(self.encrypted_inner_key),
            "EncryptionParams": {**_PARAMS_FIXED, "Iv": _b64(self.iv)},
            "AuthenticationData": _b64(self.authentication_data),
        }


def seal(jwt: bytes | str, rsa_public_key: rsa.RSAPublicKey) -> SealedEnvelope:
    """Encrypt ``jwt`` for the holder of ``rsa_public_key`` (the certified vTPM key).

    A fresh AES-256 key and 12-byte IV per call; the key is wrapped with
    RSAES-PKCS1-v1_5, the only scheme the Azure guest unsealer uses.
    """
    if not isinstance(rsa_public_key, rsa.RSAPublicKey):
        raise CryptoError("seal: the encryption key is not an RSA public key")
    plaintext = jwt.encode("ascii") if isinstance(jwt, str) else bytes(jwt)
    key = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(IV_BYTES)
    sealed = AESGCM(key).encrypt(iv, plaintext, AAD)
    wrapped = rsa_public_key.encrypt(key, padding.PKCS1v15())
    return SealedEnvelope(
        jwt_ciphertext=sealed[:-TAG_BYTES],
        encrypted_inner_key=wrapped,
        iv=iv,
        authentication_data=sealed[-TAG_BYTES:],
    )


def open_with_key(env: SealedEnvelope, aes_key: bytes) -> str:
    """AES-256-GCM-decrypt the token with the (TPM-unwrapped) key; returns the compact JWS.

    Raises :class:`CryptoError` when the key, IV or tag do not fit (a wrong vTPM,
    changed PCRs upstream, or a tampered envelope).
    """
    if len(aes_key) != KEY_BYTES:
        raise CryptoError(f"open: inner key is {len(aes_key)} bytes, expected {KEY_BYTES}")
    try:
        plain = AESGCM(bytes(aes_key)).decrypt(
            env.iv, env.jwt_ciphertext + env.authentication_data, AAD
        )
    except InvalidTag:
        raise CryptoError(
            "open: AES-GCM authentication failed (wrong key or tampered envelope)"
        ) from None
    try:
        return plain.decode("ascii")
    except UnicodeDecodeError:
        raise CryptoError("open: decrypted token is not ASCII (not a compact JWS)") from None


def encode_token_response(env: SealedEnvelope) -> bytes:
    """The HTTP body ``{"token": base64url(envelope JSON)}`` (unpadded, like MAA)."""
    inner = json.dumps(env.to_json(), separators=(",", ":")).encode("ascii")
    token = b64url_encode(inner)
    return json.dumps({"token": token}, separators=(",", ":")).encode("ascii")


def decode_token_response(body: bytes) -> SealedEnvelope:
    """Parse a ``{"token": ...}`` response strictly; every problem names its field.

    Accepts the body or the bare envelope JSON object (as stored in the corpus).
    """
    if len(body) > MAX_RESPONSE_BYTES:
        raise ProtocolError(f"response is {len(body)} bytes, limit {MAX_RESPONSE_BYTES}")
    outer = _json_object(body, "body")
    if "token" in outer:
        token = outer["token"]
        if not isinstance(token, str):
            raise ProtocolError("must be a string", field="token")
        inner = _json_object(_b64url_decode(token, "token"), "token")
    else:
        inner = outer
    jwt_ct = _field_b64(inner, "Jwt")
    wrapped = _field_b64(inner, "EncryptedInnerKey")
    tag = _field_b64(inner, "AuthenticationData")
    params = inner.get("EncryptionParams")
    if not isinstance(params, dict):
        raise ProtocolError("missing or not an object", field="EncryptionParams")
    for name, want in _PARAMS_FIXED.items():
        got = params.get(name)
        if got != want or type(got) is not type(want):
            raise ProtocolError(f"is {got!r}, expected {want!r}", field=f"EncryptionParams.{name}")
    iv = _field_b64(params, "Iv", where="EncryptionParams.")
    if len(iv) != IV_BYTES:
        raise ProtocolError(f"is {len(iv)} bytes, expected {IV_BYTES}", field="EncryptionParams.Iv")
    if len(tag) != TAG_BYTES:
        raise ProtocolError(
            f"is {len(tag)} bytes, expected {TAG_BYTES}", field="AuthenticationData"
        )
    if not 128 <= len(wrapped) <= 1024:
        raise ProtocolError(
            f"is {len(wrapped)} bytes, not an RSA-1024..8192 ciphertext", field="EncryptedInnerKey"
        )
    if not jwt_ct:
        raise ProtocolError("is empty", field="Jwt")
    return SealedEnvelope(
        jwt_ciphertext=jwt_ct, encrypted_inner_key=wrapped, iv=iv, authentication_data=tag
    )


# --- helpers ----------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json_object(data: bytes, field: str) -> dict[str, Any]:
    # the shared depth-limited reader: the body comes from the network (a deeply nested
    # one made the parser's RecursionError escape as an untyped error)
    value = read_json(data, field=field)
    if not isinstance(value, dict):
        raise ProtocolError("not a JSON object", field=field)
    return value


def _b64url_decode(text: str, field: str) -> bytes:
    try:
        return b64url_decode(text)
    except (binascii.Error, ValueError):
        raise ProtocolError("not base64url", field=field) from None


def _field_b64(obj: dict[str, Any], name: str, *, where: str = "") -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ProtocolError("missing or not a string", field=f"{where}{name}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("not standard base64", field=f"{where}{name}") from None
