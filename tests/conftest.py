"""Shared test fixtures: where the shared corpus lives.

Tests read the corpus in place (``../shared`` beside the repository, or
``$BOOTWATCH_SHARED``); they never copy it into the project.  Each area keeps
its own fixtures in ``tests/<area>/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# shared test helpers (servers, databases) importable by every test folder
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
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


def require_swtpm() -> None:
    """Fail (not skip) when swtpm is missing: the real vTPM is part of what the tests check.

    ``scripts/setup`` installs it; set ``BOOTWATCH_SKIP_SWTPM=1`` to skip instead on a
    machine that cannot have it.
    """
    missing = [tool for tool in ("swtpm", "swtpm_ioctl") if shutil.which(tool) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (run scripts/setup)"
    if os.environ.get("BOOTWATCH_SKIP_SWTPM") == "1":
        pytest.skip(message)
    pytest.fail(message)


def stop_leftover_swtpms(root: Path) -> None:
    """SIGKILL swtpm processes whose command line names this lab's folder (and only those)."""
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
    require_swtpm()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, swtpm_available: None) -> Iterator[object]:
    """One lab of swtpm VMs per test session; every swtpm of it is stopped at the end."""
    from bootwatch.lab import Lab

    root = tmp_path_factory.mktemp("lab")
    try:
        yield Lab(root)
    finally:
        stop_leftover_swtpms(root)
