"""The top-level command: every registered group is listed and importable."""

import subprocess
import sys

from bootwatch.cli.main import GROUPS


def test_help_lists_every_group() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout
    for name in GROUPS:
        assert name in out


def test_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "no-such-command"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
