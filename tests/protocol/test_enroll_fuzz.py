"""The enrolment decoders (both rounds, both directions) on 20,000 mutated bodies: every
outcome is a decoded value or a ProtocolError naming a field, nothing else.

A seeded random loop (reproducible: the seed is in the failure message) mutates valid
bodies at three levels: raw bytes of the JSON, JSON values (wrong types, huge strings,
missing and extra keys) and the binary fields inside (truncated, padded, bit-flipped
TPM2B structures and certificates).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bootwatch.errors import ProtocolError
from bootwatch.protocol.enroll import (
    ChallengeResponse,
    EnrolledAik,
    decode_activate_request,
    decode_challenge_request,
    decode_challenge_response,
    decode_enrolled_aik,
    encode_activate_request,
    encode_challenge_request,
    encode_challenge_response,
    encode_enrolled_aik,
)
from bootwatch.tpm.public import parse_tpm2b_public

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
AIK_PUB = (SHARED / "corpus/maa/azure-guest-vm-derived/aik-pub.tpm2b").read_bytes()
ENC_PUB = (SHARED / "corpus/maa/azure-guest-vm-derived/enckey-pub.tpm2b").read_bytes()
AIK_CERT = (SHARED / "corpus/maa/azure-guest-vm-derived/aik-cert.der").read_bytes()
CASES = 20_000


def _cert() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz EK")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


EK_CERT = _cert()
NAME = parse_tpm2b_public(AIK_PUB).name
VALID: list[tuple[str, bytes, Callable[[bytes], Any]]] = [
    ("challenge request", encode_challenge_request(EK_CERT, ENC_PUB, AIK_PUB, NAME,
                                                   "7e0d2f36-1b34-4c55-9d1e-2f9a4b1c0d11"),
     decode_challenge_request),
    ("activate request", encode_activate_request(os.urandom(200), os.urandom(32), NAME),
     decode_activate_request),
    ("challenge response", encode_challenge_response(ChallengeResponse(
        b"\x00\x44\x00\x20" + os.urandom(32) + os.urandom(34),
        b"\x01\x00" + os.urandom(256), os.urandom(300))), decode_challenge_response),
    ("enrolled aik", encode_enrolled_aik(EnrolledAik(AIK_CERT, (EK_CERT,))),
     decode_enrolled_aik),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf)):][: rng.randint(1, 40)]
        elif op == 2:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        else:
            buf = buf[: rng.randrange(len(buf) + 1)]
    return bytes(buf)


_JUNK: list[Any] = [None, True, 0, -1, 2**70, 1.5, "", "=", "AA", "A", "!!", [], {}, ["AA"],
                    "A" * 200_000, {"a": [1]}, "\u00e9\u00e9", "NaN"]


def _mutate_json(rng: random.Random, body: bytes) -> bytes:
    obj = json.loads(body)
    key = rng.choice(sorted(obj))
    op = rng.randrange(6)
    if op == 0:
        del obj[key]
    elif op == 1:
        obj["extra" + str(rng.randrange(3))] = "AA"
    elif op == 2:
        obj[key] = rng.choice(_JUNK)
    elif op in (3, 4) and isinstance(obj[key], str):
        try:
            raw = base64.urlsafe_b64decode(obj[key] + "=" * (-len(obj[key]) % 4))
        except ValueError:
            raw = os.urandom(8)
        obj[key] = _b64(_mutate_bytes(rng, raw))
    elif isinstance(obj[key], list):
        obj[key] = [_b64(_mutate_bytes(rng, EK_CERT))] * rng.randint(0, 12)
    else:
        return json.dumps([obj]).encode()
    return json.dumps(obj).encode()


def test_valid_bodies_decode() -> None:
    for what, body, decode in VALID:
        assert decode(body) is not None, what


def test_twenty_thousand_mutations_give_only_typed_errors() -> None:
    seed = 1802
    rng = random.Random(seed)
    outcomes = {"ok": 0, "refused": 0}
    fields: set[str] = set()
    for i in range(CASES):
        what, body, decode = VALID[i % len(VALID)]
        mutated = _mutate_json(rng, body) if rng.random() < 0.6 else _mutate_bytes(rng, body)
        try:
            decode(mutated)
        except ProtocolError as exc:
            outcomes["refused"] += 1
            assert exc.field, f"case {i} (seed {seed}, {what}): no field named: {exc}"
            fields.add(exc.field.split("[")[0])
        except Exception as exc:  # pragma: no cover - the failure being looked for
            pytest.fail(f"case {i} (seed {seed}, {what}) raised {type(exc).__name__}: {exc}; "
                        f"body {mutated[:200]!r}")
        else:
            outcomes["ok"] += 1
    assert outcomes["refused"] > CASES // 2
    # every field of every shape was reached and named by some refusal
    assert {"body", "ek_cert", "ek_pub", "aik_pub", "aik_name", "vm_id", "service_context",
            "secret", "credential_blob", "encrypted_secret", "aik_cert", "chain"} <= fields
