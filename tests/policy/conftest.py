"""Fixtures for the policy tests: the sample-policy corpus, read in place."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from bootwatch.policy import Claim, ClaimIssuer, ClaimValueType

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
MAA = SHARED / "corpus" / "maa"
POLICIES = MAA / "policies"

#: Wraps a rule fragment from the docs so it is a whole policy; the fragment starts at
#: line FRAGMENT_LINE, column 1, so error positions map back to the fragment.
WRAP_PREFIX = "version=1.2;\nauthorizationrules { => permit(); };\nissuancerules {\n"
FRAGMENT_LINE = 4


def wrap(fragment: str) -> str:
    return WRAP_PREFIX + fragment + "\n};\n"


def read(name: str) -> str:
    return (POLICIES / name).read_text(encoding="utf-8")


_CLAIM_LINE = re.compile(r'type\s*=\s*"([^"]*)"\s*,\s*value\s*=\s*(.*?)\s*\}\s*$')


def parse_claim_notation(text: str) -> list[Claim]:
    """The docs' informal ``ClaimN: { type="x", value=... }`` lines -> claims.

    A quoted value is a string (JSON escapes such as ``\\"`` apply); ``true``/``false``
    are booleans and digits integers. Issuer defaults to CustomClaim, as the grammar says.
    """
    claims = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _CLAIM_LINE.search(line)
        assert m, f"unreadable claim line {line!r}"
        ctype, raw = m.groups()
        value: str | int | bool
        if raw.startswith('"'):
            value = json.loads(raw)
        elif raw in ("true", "false"):
            value = raw == "true"
        else:
            value = int(raw)
        claims.append(Claim(ctype, value, ClaimValueType.of(value), ClaimIssuer.CUSTOM_CLAIM))
    return claims


@pytest.fixture(scope="session")
def policies_dir() -> Path:
    if not POLICIES.is_dir():
        pytest.fail(f"policy corpus not found at {POLICIES} (set BOOTWATCH_SHARED)")
    return POLICIES


class Corpus:
    """Helpers handed to tests as one fixture (importlib mode forbids importing conftest)."""

    dir = POLICIES
    fragment_line = FRAGMENT_LINE
    wrap = staticmethod(wrap)
    read = staticmethod(read)
    claims = staticmethod(parse_claim_notation)


@pytest.fixture(scope="session")
def pc(policies_dir: Path) -> Corpus:
    return Corpus()
