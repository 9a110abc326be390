"""The two policy hashes MAA publishes (maa-protocol.md 2.8, vector in section 6).

``x-ms-policy-hash`` (in attestation tokens) identifies the policy text;
``x-ms-policy-token-hash`` (in policy-management results) identifies the exact upload.
"""

from __future__ import annotations

import hashlib

from bootwatch.encoding import b64url_encode

__all__ = [
    "policy_hash",
    "policy_token_hash",
]


def policy_hash(text: str) -> str:
    """x-ms-policy-hash: base64url(SHA-256(UTF-8(base64url(UTF-8(policy text)))))."""
    encoded = b64url_encode(text.encode("utf-8")).encode("ascii")
    return b64url_encode(hashlib.sha256(encoded).digest())


def policy_token_hash(compact_jws: str) -> str:
    """x-ms-policy-token-hash: base64url(SHA-256(the compact JWS exactly as sent)).

    The trailing ``.`` of an unsigned JWS is part of the hashed text.
    """
    return b64url_encode(hashlib.sha256(compact_jws.encode("ascii")).digest())
