"""Token claim assembly with a fixed clock and a generated RSA key (verified with PyJWT)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bootwatch.attest.token import (
    DEFAULT_VALIDITY,
    IssuedClaim,
    assemble_token_claims,
    new_jti,
    validity_from_properties,
)
from bootwatch.errors import PolicyEvaluationError

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
AZUREVM = {"secureboot": True, "x-ms-azurevm-dbvalidated": True,
           "x-ms-azurevm-attested-pcrs": [0, 1, 2, 3, 4, 5, 6, 7]}


def test_shape_and_lifetime() -> None:
    body = assemble_token_claims(
        issuer="https://bw.example", now=NOW, azurevm=AZUREVM, issued=(),
        policy_hash="wm9mHlvTU82e8UqoOy1Yj1FBRSNkfe99-69IYDq9eWs", policy_signer=None,
    )
    iat = int(NOW.timestamp())
    assert body["iat"] == body["nbf"] == iat
    assert body["exp"] - body["iat"] == 28800
    assert body["x-ms-ver"] == "1.0" and body["x-ms-attestation-type"] == "azurevm"
    assert body["iss"] == "https://bw.example"
    assert len(body["jti"]) == 64 and int(body["jti"], 16) >= 0
    assert "x-ms-policy-signer" not in body
    assert list(body) == sorted(body)


def test_issued_claims_cannot_override_service_claims() -> None:
    issued = [IssuedClaim("secureboot", False), IssuedClaim("iss", "evil"),
              IssuedClaim("custom", 1), IssuedClaim("multi", "a"), IssuedClaim("multi", "b")]
    body = assemble_token_claims(
        issuer="https://bw", now=NOW, azurevm=AZUREVM, issued=issued, policy_hash="h",
        policy_signer={"kty": "RSA", "x5c": ["AAAA"]}, jti="ab" * 32,
    )
    assert body["secureboot"] is True and body["iss"] == "https://bw"
    assert body["custom"] == 1 and body["multi"] == ["a", "b"]
    assert body["x-ms-policy-signer"] == {"kty": "RSA", "x5c": ["AAAA"]}
    assert body["jti"] == "ab" * 32


def test_signed_token_verifies_with_pyjwt() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = assemble_token_claims(issuer="https://bw", now=datetime.now(UTC), azurevm=AZUREVM,
                                 issued=(), policy_hash="h", policy_signer=None)
    token = jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})
    got = jwt.decode(token, key.public_key(), algorithms=["RS256"], issuer="https://bw")
    assert got == body


def test_validity_property() -> None:
    assert validity_from_properties({}) == DEFAULT_VALIDITY
    assert validity_from_properties({"report_validity_in_minutes": 60}) == timedelta(hours=1)
    assert validity_from_properties({"report_validity_in_minutes": "5"}) == timedelta(minutes=5)
    for bad in (0, -1, "x", True, 10**9, 1.5):
        with pytest.raises(PolicyEvaluationError, match="report_validity_in_minutes"):
            validity_from_properties({"report_validity_in_minutes": bad})


def test_jti_unique() -> None:
    assert len({new_jti() for _ in range(100)}) == 100
