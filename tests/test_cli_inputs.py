"""Every CLI command that reads a file refuses hostile inputs with exit 2 and one line:
an endless file (``/dev/zero``: its stat size is 0, so only a bounded read stops it),
a directory and a missing file; never a traceback, never unbounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import MAA

# the corpus as the suite finds it ($BOOTWATCH_SHARED, else ../shared)
POLICY = MAA / "policies/tpm-sample-policies__minimal-1.0.txt"

COMMANDS = {
    "log replay": ["log", "replay", "{x}"],
    "log state": ["log", "state", "{x}"],
    "log show": ["log", "show", "{x}"],
    "attest verify": ["attest", "verify", "{x}"],
    "policy check": ["policy", "check", "{x}"],
    "policy hash": ["policy", "hash", "{x}"],
    "policy eval --claims": ["policy", "eval", str(POLICY), "--claims", "{x}"],
}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", *args],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("bad", ["/dev/zero", "directory", "missing"])
def test_hostile_file_inputs(name: str, bad: str, tmp_path: Path) -> None:
    target = {"/dev/zero": "/dev/zero", "directory": str(tmp_path),
              "missing": str(tmp_path / "nope")}[bad]
    proc = _run([a.replace("{x}", target) for a in COMMANDS[name]])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, "an error line is printed"
    if bad == "/dev/zero":
        assert len(lines) == 1 and "over the limit" in lines[0]
