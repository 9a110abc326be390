"""swtpm fixtures for the agent tests (as in tests/lab): one lab per session.

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
def agent_vm(lab: Lab) -> LabVm:
    """One Trusted-Launch-like VM booted from a real RHEL 8 UEFI log, created once."""
    return lab.create_vm("rhel8", EVENTLOGS / "go-tpm-tools/rhel8-uefi.bin")
