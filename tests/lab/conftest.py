"""swtpm fixtures for the lab tests: one lab per session, VMs provisioned once.

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

#: name -> corpus log: a plain TCG2 log, StartupLocality 3, H-CRTM, SHA-1 only
LAB_LOGS = {
    "rhel8": "go-tpm-tools/rhel8-uefi.bin",
    "alex": "go-tpm-tools/glinux-alex.bin",
    "hcrtm": "tpm2-tss/binary_measurements_hcrtm.bin",
    "sha1only": "tpm2-tools/event-uefi-sha1-log.bin",
}


@pytest.fixture(scope="session")
def lab_vms(lab: Lab) -> dict[str, LabVm]:
    """The four corpus VMs, created once per session."""
    return {name: lab.create_vm(name, EVENTLOGS / log) for name, log in LAB_LOGS.items()}
