"""Sealed envelope (maa-protocol 1.3): round trip, the real corpus envelope, strictness."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bootwatch.errors import CryptoError, ProtocolError
from bootwatch.protocol.envelope import (
    AAD,
    SealedEnvelope,
    decode_token_response,
    encode_token_response,
    open_with_key,
    seal,
)

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
CORPUS_ENVELOPE = SHARED / "corpus/maa/azure-guest-vm-derived/sealed-response-envelope.json"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_round_trip_through_http_body(key: rsa.RSAPrivateKey) -> None:
    env = seal(JWT, key.public_key())
    body = encode_token_response(env)
    outer = json.loads(body)
    assert set(outer) == {"token"}
    assert "=" not in outer["token"]
    back = decode_token_response(body)
    assert back == env
    aes_key = key.decrypt(back.encrypted_inner_key, padding.PKCS1v15())
    assert len(aes_key) == 32
    assert open_with_key(back, aes_key) == JWT


def test_envelope_json_shape_matches_maa(key: rsa.RSAPrivateKey) -> None:
    env = seal(JWT.encode(), key.public_key())
    j = env.to_json()
    assert list(j) == ["Jwt", "EncryptedInnerKey", "EncryptionParams", "AuthenticationData"]
    assert j["EncryptionParams"] == {
        "BlockMode": "ChainingModeGCM",
        "BlockPadding": "PKCS7",
        "Cipher": "AES",
        "KeySizeInBits": 256,
        "Iv": base64.b64encode(env.iv).decode(),
    }
    assert len(env.iv) == 12 and len(env.authentication_data) == 16
    assert len(env.encrypted_inner_key) == 256
    assert AAD == b"Transport Key"


def test_fresh_key_and_iv_each_time(key: rsa.RSAPrivateKey) -> None:
    a, b = seal(JWT, key.public_key()), seal(JWT, key.public_key())
    assert a.iv != b.iv and a.jwt_ciphertext != b.jwt_ciphertext


def test_real_maa_envelope_decodes() -> None:
    raw = CORPUS_ENVELOPE.read_bytes()
    env = decode_token_response(raw)
    assert base64.b64encode(env.iv).decode() == "eSDcsXBhxCvL2xos"
    assert base64.b64encode(env.authentication_data).decode() == "qu6gmp2zM7A9bkayAjRAeQ=="
    assert len(env.jwt_ciphertext) == 2896 and len(env.encrypted_inner_key) == 256
    # re-encoding gives the same inner JSON object
    assert env.to_json() == json.loads(raw)
    body = {"token": base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    assert decode_token_response(json.dumps(body).encode()) == env


def test_wrong_key_and_tamper_rejected(key: rsa.RSAPrivateKey) -> None:
    env = seal(JWT, key.public_key())
    aes_key = key.decrypt(env.encrypted_inner_key, padding.PKCS1v15())
    with pytest.raises(CryptoError, match="authentication failed"):
        open_with_key(env, bytes(32))
    flipped = bytes([env.jwt_ciphertext[0] ^ 1]) + env.jwt_ciphertext[1:]
    with pytest.raises(CryptoError):
        open_with_key(SealedEnvelope(flipped, env.encrypted_inner_key, env.iv,
                                     env.authentication_data), aes_key)
    with pytest.raises(CryptoError, match="expected 32"):
        open_with_key(env, aes_key[:16])


def _body(inner: dict[str, object]) -> bytes:
    token = base64.urlsafe_b64encode(json.dumps(inner).encode()).decode()
    return json.dumps({"token": token}).encode()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda j: j.pop("Jwt"), "Jwt"),
        (lambda j: j.update(EncryptedInnerKey="!!notbase64"), "EncryptedInnerKey"),
        (lambda j: j["EncryptionParams"].update(Cipher="DES"), "EncryptionParams.Cipher"),
        (lambda j: j["EncryptionParams"].update(KeySizeInBits="256"),
         "EncryptionParams.KeySizeInBits"),
        (lambda j: j["EncryptionParams"].update(Iv="AAAA"), "EncryptionParams.Iv"),
        (lambda j: j.update(AuthenticationData="AAAA"), "AuthenticationData"),
        (lambda j: j.update(EncryptionParams=[]), "EncryptionParams"),
    ],
)
def test_malformed_fields_named(key: rsa.RSAPrivateKey, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    inner = seal(JWT, key.public_key()).to_json()
    mutate(inner)
    with pytest.raises(ProtocolError) as exc:
        decode_token_response(_body(inner))
    assert exc.value.field == field


@pytest.mark.parametrize("body", [b"", b"[]", b"{\"token\": 5}", b"{\"token\": \"@@@\"}", b"\xff"])
def test_garbage_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_token_response(body)


def test_size_limit() -> None:
    with pytest.raises(ProtocolError, match="limit"):
        decode_token_response(b" " * (1024 * 1024 + 1))
