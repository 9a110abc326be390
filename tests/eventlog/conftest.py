"""Fixtures of the event-log tests: the corpus of real logs and its MANIFEST table.

Paths are computed like tests/conftest.py (``../shared`` beside the repository
or ``$BOOTWATCH_SHARED``): with importlib mode, tests cannot import it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
EVENTLOGS = SHARED / "corpus" / "eventlogs"


@pytest.fixture(scope="session")
def eventlogs() -> Path:
    """Root of ``shared/corpus/eventlogs``."""
    return EVENTLOGS
