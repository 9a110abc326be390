"""Fixtures of the attestation tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import attest_corpus


@pytest.fixture(scope="session")
def azure_request_body() -> bytes:
    return attest_corpus.azure_request_body()
