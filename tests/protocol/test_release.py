"""Signed release manifests: canonical signing, strict decoding, the upgrade rule."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bootwatch.errors import ProtocolError
from bootwatch.protocol.release import (
    RefusalReason,
    ReleaseManifest,
    ReleaseRefusedError,
    canonical_manifest_bytes,
    check_upgrade,
    decode_signed_release,
    key_id,
    load_private_key,
    load_public_key,
    sign_release,
    verify_release,
)

WHEEL_BYTES = b"PK\x03\x04 stand-in wheel bytes for the manifest"


def _manifest(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey,
              version: str = "0.2.0", **extra: object) -> ReleaseManifest:
    fields: dict[str, object] = {
        "version": version, "wheel": f"bootwatch-{version}-py3-none-any.whl",
        "size": len(WHEEL_BYTES), "sha256": hashlib.sha256(WHEEL_BYTES).hexdigest(),
        "published_at": datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        "key_id": key_id(key.public_key()),
    }
    fields.update(extra)
    return ReleaseManifest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("make_key", [
    ed25519.Ed25519PrivateKey.generate, lambda: ec.generate_private_key(ec.SECP256R1()),
], ids=["ed25519", "p256"])
def test_sign_then_verify_round_trips_for_both_algorithms(make_key: object) -> None:
    key = make_key()  # type: ignore[operator]
    manifest = _manifest(key, min_agent_version="0.1.0")
    body = sign_release(manifest, key)
    unverified = decode_signed_release(body)
    assert unverified.claimed == manifest
    assert unverified.signed_bytes == canonical_manifest_bytes(manifest)
    assert verify_release(unverified, (key.public_key(),)) == manifest
    # the key survives its PEM round trip (what keygen writes and the agent reads)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    priv_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    assert key_id(load_public_key(pem, "pub.pem")) == manifest.key_id
    assert key_id(load_private_key(priv_pem, "key.pem").public_key()) == manifest.key_id


def test_the_signature_covers_the_canonical_bytes_not_the_wire_layout() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    body = json.loads(sign_release(_manifest(key), key))
    relaid = json.dumps(body, indent=3).encode()  # whitespace and order changes are harmless
    assert verify_release(decode_signed_release(relaid), (key.public_key(),)).version == "0.2.0"


@pytest.mark.parametrize("field,value", [
    ("version", "0.3.0"), ("size", 1), ("sha256", "0" * 64),
    ("published_at", "2027-01-01T00:00:00Z"), ("max_agent_version", "9.0"),
])
def test_any_changed_field_breaks_the_signature(field: str, value: object) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    body = json.loads(sign_release(_manifest(key), key))
    body["manifest"][field] = value
    if field == "version":
        body["manifest"]["wheel"] = "bootwatch-0.3.0-py3-none-any.whl"
    with pytest.raises(ReleaseRefusedError) as err:
        verify_release(decode_signed_release(json.dumps(body).encode()), (key.public_key(),))
    assert err.value.reason is RefusalReason.BAD_SIGNATURE


def test_an_untrusted_key_or_a_mismatched_algorithm_is_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    other = ed25519.Ed25519PrivateKey.generate()
    body = sign_release(_manifest(key), key)
    with pytest.raises(ReleaseRefusedError) as err:
        verify_release(decode_signed_release(body), (other.public_key(),))
    assert err.value.reason is RefusalReason.UNKNOWN_KEY
    assert "not a trusted release key" in str(err.value)
    relabelled = json.loads(body)
    relabelled["alg"] = "ES256"
    with pytest.raises(ReleaseRefusedError) as err:
        verify_release(decode_signed_release(json.dumps(relabelled).encode()),
                       (key.public_key(),))
    assert err.value.reason is RefusalReason.BAD_SIGNATURE


def test_signing_refuses_a_manifest_naming_another_key() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(ProtocolError, match="key_id"):
        sign_release(_manifest(other), key)


def test_keys_on_other_curves_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    pem = p384.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ProtocolError, match="P-256"):
        load_public_key(pem, "p384.pem")
    with pytest.raises(ProtocolError, match="not a PEM public key"):
        load_public_key(b"-----BEGIN NONSENSE-----", "bad.pem")


def _body_with(**changes: object) -> bytes:
    key = ed25519.Ed25519PrivateKey.generate()
    body = json.loads(sign_release(_manifest(key), key))
    for path, value in changes.items():
        where, _, name = path.partition("__")
        target = body["manifest"] if where == "manifest" else body
        if value is KeyError:
            del target[name or where]
        else:
            target[name or where] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize("changes,field", [
    ({"manifest__version": "v0.2.0"}, "manifest.version"),  # not in normalised form
    ({"manifest__version": "banana"}, "manifest.version"),
    ({"manifest__version": "0.2.0+local"}, "manifest.version"),
    ({"manifest__wheel": "bootwatch-0.2.0-cp311-cp311-linux_x86_64.whl"}, "manifest.wheel"),
    ({"manifest__wheel": "bootwatch-0.3.0-py3-none-any.whl"}, "manifest.wheel"),
    ({"manifest__wheel": "../../etc/passwd"}, "manifest.wheel"),
    ({"manifest__size": 0}, "manifest.size"),
    ({"manifest__size": True}, "manifest.size"),
    ({"manifest__size": 2**40}, "manifest.size"),
    ({"manifest__sha256": "AB" * 32}, "manifest.sha256"),
    ({"manifest__sha256": KeyError}, "manifest.sha256"),
    ({"manifest__key_id": "short"}, "manifest.key_id"),
    ({"manifest__published_at": "yesterday"}, "manifest.published_at"),
    ({"manifest__published_at": "2026-12-01T12:00:00"}, "manifest.published_at"),
    ({"manifest__min_agent_version": "x.y"}, "manifest.min_agent_version"),
    ({"manifest__format": 2}, "manifest.format"),
    ({"manifest__project": "other"}, "manifest.project"),
    ({"manifest__extra": 1}, "manifest"),
    ({"alg": "RS256"}, "alg"),
    ({"signature": "!!!"}, "signature"),
    ({"signature": 5}, "signature"),
])
def test_the_decoder_names_the_bad_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_signed_release(_body_with(**changes))
    assert err.value.field == field or str(err.value).startswith(f"{field}:"), str(err.value)


@pytest.mark.parametrize("body,needle", [
    (b"[]", "JSON object"), (b"{", "not JSON"), (b'{"manifest": NaN}', "not valid JSON"),
    (b"{}" + b" " * 20000, "larger than"), (b'{"manifest": {}, "x": 1}', "unknown field"),
])
def test_the_decoder_refuses_malformed_bodies(body: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        decode_signed_release(body)


KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize("current,offered,kwargs,reason", [
    ("0.1.0", "0.2.0", {}, None),
    ("0.1.0", "0.1.1", {}, None),
    ("1.4.2", "1.10.0", {}, None),  # numeric, not string, comparison
    ("0.2.0", "0.1.0", {}, RefusalReason.DOWNGRADE),
    ("0.2.0", "0.2.0", {}, RefusalReason.NOT_NEWER),
    ("0.2", "0.2.0", {}, RefusalReason.NOT_NEWER),  # PEP 440: equal versions
    ("1.9.0", "2.0.0", {}, RefusalReason.MAJOR),
    ("1.9.0", "2.0.0", {"allow_major": True}, None),
    ("2.0.0", "1.9.0", {"allow_major": True}, RefusalReason.DOWNGRADE),
    ("0.1.0", "0.2.0rc1", {}, RefusalReason.PRERELEASE),
    ("0.1.0", "0.2.0rc1", {"allow_prerelease": True}, None),
    ("0.1.0", "0.2.0.dev3", {}, RefusalReason.PRERELEASE),
])
def test_the_upgrade_rule(
    current: str, offered: str, kwargs: dict[str, bool], reason: RefusalReason | None
) -> None:
    verdict = check_upgrade(current, _manifest(KEY, offered), **kwargs)
    assert verdict.allowed is (reason is None)
    assert verdict.reason is reason
    if reason is not None:
        assert current in verdict.message and offered in verdict.message


@pytest.mark.parametrize("current,bounds,allowed", [
    ("0.1.0", {"min_agent_version": "0.1.5"}, False),
    ("0.1.5", {"min_agent_version": "0.1.5"}, True),
    ("0.1.9", {"max_agent_version": "0.1.8"}, False),
    ("0.1.8", {"max_agent_version": "0.1.8"}, True),
])
def test_the_manifest_bounds_which_agents_may_take_it(
    current: str, bounds: dict[str, str], allowed: bool
) -> None:
    verdict = check_upgrade(current, _manifest(KEY, "0.2.0", **bounds))
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.reason is RefusalReason.CONSTRAINT
