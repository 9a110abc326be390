"""Edges of the monitor's JSON API and of the CLI commands that print its data, over real
HTTP on loopback (``bootwatch monitor run``'s app under uvicorn, SQLite).

Each test here failed on the code before its fix:
- keyset pages of ``GET /recommendations`` skipped the rest of a VM's rows when a page
  ended inside them (``after`` was a VM id alone: ``after_key`` continues inside it);
- a forged VM-list cursor or an approval of a boot id past 64 bits was a 500, not a 400;
- the CLI printed names, descriptions and components as rich markup (``[red]x[/red]``
  lost its brackets, a severity ``[medium]`` vanished) and let terminal escapes through;
- the CLI put a VM reference into the URL unquoted, so ``vm show 'db#2'`` showed the VM
  named ``db`` (the rest was a URL fragment) and ``vm disable 'db#2'`` failed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bwservers import serve_monitor
from click.testing import CliRunner

from bootwatch.cli.main import cli
from bootwatch.monitor.container import MonitorContainer

ADMIN = "edge-admin-token-0123456789abcdef"
VM_A = "8D0E8C8A-7D3B-4C1E-9A51-0F6F4F7C2B10"
VM_B = "8D0E8C8A-7D3B-4C1E-9A51-0F6F4F7C2B11"
HOSTILE = "[red]x[/red] [link=https://evil.example]y[/link]\x1b[2J\x1b]0;pwned\x07z"


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[tuple[str, MonitorContainer]]:
    with serve_monitor(tmp_path, ADMIN) as served:
        yield served


def _api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/api/v1", timeout=10,
                        headers={"Authorization": f"Bearer {ADMIN}"})


def _cli(url: str, *args: str) -> str:
    env = {"BOOTWATCH_MONITOR": url, "BOOTWATCH_MONITOR_TOKEN": ADMIN}
    res = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_recommendation_pages_by_after_cover_every_row_once(
        monitor: tuple[str, MonitorContainer]) -> None:
    url, container = monitor
    for vm_id in (VM_A, VM_B):
        container.monitor.enable(vm_id)
    with _api(url) as api:
        every = api.get("/recommendations").json()["items"]
        assert len({r["key"] for r in every}) > 3  # a page of 3 ends inside a VM's rows
        seen: list[tuple[str, str]] = []
        params: dict[str, str | int] = {"limit": 3}
        for _ in range(len(every) + 1):
            page = api.get("/recommendations", params=params)
            assert page.status_code == 200, page.text
            items = page.json()["items"]
            seen += [(r["vm_id"], r["key"]) for r in items]
            if len(items) < 3:
                break
            # the keyset of the last row: its VM id and, within that VM, its key
            params = {"limit": 3, "after": items[-1]["vm_id"], "after_key": items[-1]["key"]}
    assert seen == [(r["vm_id"], r["key"]) for r in every]


def test_forged_cursor_and_huge_boot_ids_are_400s_naming_the_field(
        monitor: tuple[str, MonitorContainer]) -> None:
    url, container = monitor
    container.monitor.enable(VM_A)
    forged = base64.urlsafe_b64encode(f"{10**30}|{VM_A}".encode()).decode()
    with _api(url) as api:
        r = api.get("/vms", params={"cursor": forged})
        assert r.status_code == 400 and "'cursor'" in r.json()["error"]["message"], r.text
        for boot in (2**63, 2**31, 0):
            r = api.post("/baselines/approve", json={"vm": VM_A, "boot": boot})
            assert r.status_code == 400 and "'boot'" in r.json()["error"]["message"], r.text


def test_cli_prints_hostile_names_and_texts_literally(
        monitor: tuple[str, MonitorContainer]) -> None:
    url, container = monitor
    container.monitor.enable(VM_A, name=HOSTILE, group=HOSTILE)
    listed = _cli(url, "vm", "list")
    shown = _cli(url, "vm", "show", VM_A)
    recs = _cli(url, "recommendation", "list", "--vm", VM_A)
    for out in (listed, shown):
        assert "[red]x[/red] [link=https://evil.example]y[/link]" in out, out
    for out in (listed, shown, recs):
        assert "\x1b" not in out and "\x07" not in out, repr(out)
    # a severity in brackets is text, not a (unknown, so silently dropped) style tag
    assert "RECOMMENDATION [high]" in shown or "RECOMMENDATION [medium]" in shown \
        or "RECOMMENDATION [low]" in shown, shown


def test_cli_quotes_the_vm_reference_in_the_url(monitor: tuple[str, MonitorContainer]) -> None:
    url, container = monitor
    container.monitor.enable(VM_A, name="db")
    container.monitor.enable(VM_B, name="db#2")
    shown = _cli(url, "vm", "show", "db#2")
    assert VM_B in shown and VM_A not in shown, shown
    _cli(url, "vm", "disable", "db#2")
    with _api(url) as api:
        assert api.get(f"/vms/{VM_A}").json()["monitored"] is True
        assert api.get(f"/vms/{VM_B}").json()["monitored"] is False
