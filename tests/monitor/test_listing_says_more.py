"""Lists that stop say so (found in an audit): ``GET /alerts`` answers ``next_offset``
(150 open alerts read as 100, with nothing saying more followed) and the CLI follows it;
a VM's detail says ``boots_truncated`` past its newest 50 boots.  Real HTTP on loopback,
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from bwservers import ThreadServer, bound_socket
from click.testing import CliRunner
from sqlalchemy import Engine

from bootwatch.cli.main import cli
from bootwatch.monitor.app import create_monitor_app
from bootwatch.monitor.container import bootstrap
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

ADMIN = "listing-more-admin-token-0123456789"
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _outcome(vm: str, n: int, verdict: Verdict) -> OutcomeEvent:
    return OutcomeEvent(event_id=uuid.uuid4().hex, time=T0 + timedelta(seconds=n),
                        provider="p", attestation_type="AzureGuest", verdict=verdict,
                        reason=verdict.value, policy_hash="h" * 43, vm_id=vm,
                        pcrs={0: f"{n:064x}"}, events=(), reset_count=n + 1,
                        secure_boot=True)


def test_alert_pages_and_boot_history_say_when_more_follow(engines: list[Engine]) -> None:
    container = bootstrap(MonitorSettings(admin_tokens=(ADMIN,)), engine=engines[0])
    m = container.monitor
    denied = [str(uuid.uuid4()).upper() for _ in range(150)]
    for v in denied:
        m.enable(v)
    m.ingest_outcomes([_outcome(v, 0, Verdict.DENY) for v in denied])
    busy = str(uuid.uuid4()).upper()
    m.enable(busy)
    for n in range(60):  # 60 boots, each a new image
        m.ingest_outcomes([_outcome(busy, n + 1, Verdict.PERMIT)])
    server = ThreadServer(create_monitor_app(container), bound_socket()).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        with httpx.Client(base_url=url + "/api/v1") as c:
            first = c.get("/alerts", params={"status": "open", "reason": "policy_denied"}).json()
            assert len(first["items"]) == 100 and first["next_offset"] == 100
            last = c.get("/alerts", params={"status": "open", "reason": "policy_denied",
                                            "offset": 100}).json()
            assert len(last["items"]) == 50 and last["next_offset"] is None
            detail = c.get(f"/vms/{busy}").json()
            assert len(detail["boots"]) == 50 and detail["boots_truncated"] is True
            assert c.get(f"/vms/{denied[0]}").json()["boots_truncated"] is False
        res = CliRunner().invoke(cli, ["alert", "list", "--json", "--status", "open",
                                       "--reason", "policy_denied", "--monitor", url],
                                 env={"BOOTWATCH_MONITOR_TOKEN": ADMIN})
        assert res.exit_code == 0, res.output
        listed = json.loads(res.output)
        assert len(listed) == 150 and {a["reason"] for a in listed} == {"policy_denied"}
        shown = CliRunner().invoke(cli, ["vm", "show", busy, "--monitor", url],
                                   env={"BOOTWATCH_MONITOR_TOKEN": ADMIN})
        assert shown.exit_code == 0, shown.output
        assert "the newest 10 of more than 50 boots" in shown.output
    finally:
        server.stop()
        container.stop()
