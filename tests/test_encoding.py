"""bootwatch.encoding: the one base64url and thumbprint every layer uses."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from bootwatch.encoding import b64url_decode, b64url_encode, sha1_thumbprint


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 31, 32, 33, 257])
def test_round_trip_without_padding(size: int) -> None:
    data = os.urandom(size)
    text = b64url_encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert b64url_decode(text) == data
    assert b64url_decode(base64.urlsafe_b64encode(data).decode()) == data  # padded too


@pytest.mark.parametrize(("text", "why"), [
    ("ab+c", "at character 2"),        # standard base64, not URL-safe
    ("ab/c", "at character 2"),
    ("ab c", "at character 2"),
    ("é", "at character 0"),
    ("abcde", "5 characters is not a valid length"),
    ("a=bc", "outside the URL-safe alphabet"),  # padding only at the end
])
def test_decode_is_strict_and_says_where(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="not base64url") as info:
        b64url_decode(text)
    assert why in str(info.value)


def test_thumbprint_forms() -> None:
    der = b"certificate bytes"
    lower = hashlib.sha1(der).hexdigest()
    assert sha1_thumbprint(der) == lower
    assert sha1_thumbprint(der, upper=True) == lower.upper()


def test_no_layer_retypes_base64url_or_thumbprints() -> None:
    """Issue 10: one definition; every other module imports it."""
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "bootwatch"
    offenders = []
    for path in src.rglob("*.py"):
        if path.name == "encoding.py":
            continue
        text = path.read_text("utf-8")
        for needle in (".rstrip(b\"=\").decode(\"ascii\")", "% 4))", "hashlib.sha1(",
                       "hashes.SHA1()"):
            if needle in text:
                offenders.append(f"{path.relative_to(src)}: {needle}")
    assert offenders == []
