"""``GET /api/v1/baselines`` pages with a cursor; ``bootwatch baseline list`` follows it.

Found in an audit: the listing stopped at 1,000 variants with no cursor, and a fleet has
about one learned baseline per VM, so in a large fleet most were never listed.  Real HTTP
on loopback, the monitor's own client, SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from bwservers import ThreadServer, bound_socket
from click.testing import CliRunner
from sqlalchemy import Engine

from bootwatch.cli.main import cli
from bootwatch.monitor.app import create_monitor_app
from bootwatch.monitor.client import MonitorClient
from bootwatch.monitor.container import bootstrap
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

ADMIN = "baseline-pages-admin-token-0123456789"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _outcome(vm: str, n: int) -> OutcomeEvent:
    return OutcomeEvent(event_id=uuid.uuid4().hex, time=NOW, provider="p",
                        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="",
                        policy_hash="h" * 43, vm_id=vm, pcrs={0: f"{n:064x}"}, events=(),
                        reset_count=1, secure_boot=True)


def test_baselines_page_past_1000_and_the_cli_lists_them_all(
        engines: list[Engine], tmp_path: Path) -> None:
    container = bootstrap(MonitorSettings(admin_tokens=(ADMIN,)), engine=engines[0])
    vms = [str(uuid.uuid4()).upper() for _ in range(1005)]
    for v in vms:
        container.monitor.enable(v)
    for i in range(0, len(vms), 500):  # each VM's first verified boot is learned
        container.monitor.ingest_outcomes(
            [_outcome(v, i + j) for j, v in enumerate(vms[i:i + 500])])
    server = ThreadServer(create_monitor_app(container), bound_socket()).start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        with httpx.Client(base_url=url + "/api/v1") as c:
            first = c.get("/baselines", params={"limit": 400}).json()
            assert len(first["items"]) == 400 and first["next_cursor"]
            seen = [b["id"] for b in first["items"]]
            cursor = first["next_cursor"]
            while cursor:
                page = c.get("/baselines", params={"limit": 400, "cursor": cursor}).json()
                seen += [b["id"] for b in page["items"]]
                cursor = page["next_cursor"]
            assert len(seen) == len(set(seen)) == 1005 and seen == sorted(seen)
            for bad in ("x1", "-3", "99999999999", "١٢"):
                r = c.get("/baselines", params={"cursor": bad})
                assert r.status_code == 400 and "cursor" in r.text, (bad, r.text)
        with MonitorClient(url, token=ADMIN) as client:
            assert {b["vm_id"] for b in client.all_baselines()} == set(vms)
        res = CliRunner().invoke(cli, ["baseline", "list", "--json", "--monitor", url],
                                 env={"BOOTWATCH_MONITOR_TOKEN": ADMIN})
        assert res.exit_code == 0, res.output
        assert res.output.count('"vm_id"') == 1005
    finally:
        server.stop()
        container.stop()
