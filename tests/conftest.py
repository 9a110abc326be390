"""Shared test fixtures: where the shared corpus lives.

Tests read the corpus in place (``../shared`` beside the repository, or
``$BOOTWATCH_SHARED``); they never copy it into the project.  Each area keeps
its own fixtures in ``tests/<area>/conftest.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
CORPUS = SHARED / "corpus"
EVENTLOGS = CORPUS / "eventlogs"
MAA = CORPUS / "maa"
SECUREBOOT = CORPUS / "secureboot"


def pytest_configure(config: pytest.Config) -> None:
    if not EVENTLOGS.is_dir():
        raise pytest.UsageError(f"shared corpus not found at {SHARED} (set BOOTWATCH_SHARED)")


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Root of ``shared/corpus``."""
    return CORPUS
