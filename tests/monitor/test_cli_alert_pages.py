"""``bootwatch alert list`` pages through every open alert (it asked for one page of
1000 and cut a large fleet's list off), against the real API on loopback."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bwservers import serve_monitor
from click.testing import CliRunner

from bootwatch.cli import alert as alert_cli
from bootwatch.cli.main import cli
from bootwatch.monitor.container import MonitorContainer
from bootwatch.protocol.outcome import BootEvent, OutcomeEvent, Verdict

ADMIN = "pages-admin-token-0123456789abcdef"
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[tuple[str, MonitorContainer]]:
    with serve_monitor(tmp_path, ADMIN) as served:
        yield served


def test_alert_list_pages_through_every_open_alert(
    monitor: tuple[str, MonitorContainer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, container = monitor
    vms = [str(uuid.UUID(int=i + 1)).upper() for i in range(7)]
    events = (BootEvent(0, 7, "EV_EFI_VARIABLE_DRIVER_CONFIG", "ab" * 32, "SecureBoot"),)
    for vm in vms:
        container.monitor.enable(vm)
    container.monitor.ingest_outcomes([OutcomeEvent(
        event_id=f"deny-{i}", time=T0 + timedelta(seconds=i), provider="p",
        attestation_type="AzureGuest", verdict=Verdict.DENY, reason="denied by rule 1",
        policy_hash="h" * 43, vm_id=vm, pcrs={7: "cd" * 32}, events=events, reset_count=1,
        secure_boot=False) for i, vm in enumerate(vms)])
    monkeypatch.setattr(alert_cli, "PAGE", 3)  # 7 alerts: pages of 3, 3 and 1
    env = {"BOOTWATCH_MONITOR": url, "BOOTWATCH_MONITOR_TOKEN": ADMIN}
    res = CliRunner().invoke(cli, ["alert", "list", "--json"], env=env,
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    listed = json.loads(res.output)
    assert sorted(a["vm_id"] for a in listed) == sorted(vms)
    assert len({a["id"] for a in listed}) == 7
