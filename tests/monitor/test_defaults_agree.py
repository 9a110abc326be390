"""The monitor's default stale window and the agent's default interval agree.

Found in this session's review of the defaults: the monitor called a VM stale after
900 s without an attestation or report, while the agent attests (and reports) once an
hour by default: with both defaults every VM went stale, and raised
``agent_unresponsive``, for 45 minutes of each hour."""

from __future__ import annotations

import subprocess
import sys

from bootwatch.agent.config import DEFAULT_INTERVAL, DEFAULT_JITTER
from bootwatch.monitor.settings import MonitorSettings


def test_a_default_agent_is_never_stale_under_a_default_monitor() -> None:
    longest_gap = DEFAULT_INTERVAL * (1 + DEFAULT_JITTER)
    stale = MonitorSettings().stale_after_seconds
    # one cycle missed (a network blip) is not stale either; two are
    assert 2 * longest_gap < stale < 3 * longest_gap


def test_the_server_command_has_the_same_default() -> None:
    out = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "server", "--help"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "9000.0" in out and str(MonitorSettings().stale_after_seconds) in out
