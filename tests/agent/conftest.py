"""swtpm fixtures for the agent tests (as in tests/lab): one lab per session.

Every swtpm is started by the lab on free loopback ports and stopped when its
``running()`` block ends; the shared ``lab`` fixture (tests/conftest.py) stops any
swtpm still serving its folder at the end of the session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootwatch.lab import Lab, LabVm

SHARED = Path(
    os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[2].parent / "shared")
)
EVENTLOGS = SHARED / "corpus" / "eventlogs"


@pytest.fixture(scope="session")
def agent_vm(lab: Lab) -> LabVm:
    """One Trusted-Launch-like VM booted from a real RHEL 8 UEFI log, created once."""
    return lab.create_vm("agent-rhel8", EVENTLOGS / "go-tpm-tools/rhel8-uefi.bin")
