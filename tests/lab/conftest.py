"""swtpm fixtures for the lab tests: one lab per session, VMs provisioned once.

Every swtpm is started by the lab on free loopback ports and stopped when its
``running()`` block ends; the session finaliser also stops any swtpm still
serving this session's lab folder (by pid, only processes of this lab).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
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


def _stop_leftovers(root: Path) -> None:
    """SIGKILL swtpm processes whose command line names this lab's folder."""
    marker = str(root).encode()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmd = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if os.path.basename(cmd.split(b"\0", 1)[0]) == b"swtpm" and marker in cmd:
            os.kill(int(pid_dir.name), signal.SIGKILL)


@pytest.fixture(scope="session")
def swtpm_available() -> None:
    if shutil.which("swtpm") is None or shutil.which("swtpm_ioctl") is None:
        pytest.skip("swtpm / swtpm_ioctl not installed")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, swtpm_available: None) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    try:
        yield Lab(root)
    finally:
        _stop_leftovers(root)


@pytest.fixture(scope="session")
def lab_vms(lab: Lab) -> dict[str, LabVm]:
    """The four corpus VMs, created once per session."""
    return {name: lab.create_vm(name, EVENTLOGS / log) for name, log in LAB_LOGS.items()}
