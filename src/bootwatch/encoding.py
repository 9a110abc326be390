"""base64url and certificate thumbprints, defined once for every layer.

JWS parts, MAA's ``AttestationInfo``, policy hashes, JWK members and event-log claim
values are all base64url without padding (RFC 7515 section 2); MAA and Secure Boot
templates name certificates by the hex SHA-1 of their DER.  A leaf module (like
``lru.py``), so the pure layers, ``protocol/`` and the service all import the same
functions and no layer retypes them.
"""

from __future__ import annotations

import base64
import hashlib
import re

__all__ = ["b64url_decode", "b64url_encode", "sha1_thumbprint"]

_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url (padding optional): a character outside the URL-safe alphabet,
    or a length no encoding has, raises ValueError saying which (callers name the
    field).  Standard base64's ``+`` and ``/`` are refused, not silently accepted."""
    if not _B64URL.fullmatch(text):
        bad = next((i for i, ch in enumerate(text)
                    if not (ch.isascii() and (ch.isalnum() or ch in "-_="))), None)
        where = f" at character {bad}" if bad is not None else ""
        raise ValueError(f"not base64url: a character outside the URL-safe alphabet{where}")
    core = text.rstrip("=")
    if len(core) % 4 == 1:
        raise ValueError(f"not base64url: {len(core)} characters is not a valid length")
    return base64.urlsafe_b64decode(core + "=" * (-len(core) % 4))


def sha1_thumbprint(der: bytes, *, upper: bool = False) -> str:
    """Hex SHA-1 of a DER certificate: lower-case as Secure Boot templates and the
    event log's claims list them, ``upper=True`` for MAA's
    ``x-ms-certificate-thumbprint`` and signer ids.  An identifier, not a security
    check."""
    digest = hashlib.sha1(der, usedforsecurity=False).hexdigest()
    return digest.upper() if upper else digest
