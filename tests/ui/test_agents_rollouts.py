"""The Agents page shows agent releases and their batch rollout (Debian's Chromium via
Playwright against a real ``bootwatch server`` on loopback).

The page used to say "Not available in this build: bootwatch has no agent release or
rollout code yet", which was false.  Here a server started with a release key (as
``--release-key`` does) gets two swtpm lab VMs that attest and send verified health
reports naming their agent version; a real wheel of this tree is signed and published
with ``bootwatch release sign`` / ``release publish``.  The page must show the release
and the rollout as ``GET /api/v1/agent/releases`` gives it; once the upgraded VM turns
unhealthy (its boot deviates from its baseline), the halt and its reason.  A server
without a release key says so in one line naming the option.  The release key and the
wheels are the release tests' own fixtures.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleet import ADMIN_TOKEN, COS_NEW, COS_OLD, READER_TOKEN, Fleet, running_fleet, sign_in

from bootwatch.agent.evidence import read_os_info, read_tcg_log
from bootwatch.agent.report import MonitorClient
from bootwatch.cli.agent_attest import attest_once
from bootwatch.protocol.health import HealthReport, HealthStatus

from ..releases import conftest as releases

# the release tests' fixtures, under the same names (a real key, real wheels)
release_key = releases.release_key
wheels = releases.wheels

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

OLD, NEW = releases.OLD, releases.NEW
FALSE_SENTENCE = "no agent release or rollout code"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, corpus: Path, lab: Any,
          release_key: Any) -> Iterator[Fleet]:
    """A server with a release key and two VMs whose agents report version 0.1.0."""
    work = tmp_path_factory.mktemp("ui-rollout")
    with running_fleet(work, corpus, lab.root / f"ui-rollout-{uuid.uuid4().hex[:8]}",
                       release_keys=(str(release_key.public_pem),)) as f:
        for name in ("agent-a", "agent-b"):
            f.add_vm(name, COS_NEW)
            agent_cycle(f, name, OLD)
        yield f


def agent_cycle(fleet: Fleet, name: str, version: str) -> None:
    """One cycle of VM ``name``'s agent at ``version``: attest, then a health report with
    the token, as the daemon sends it (so the report is verified and sets the VM's agent
    version)."""
    with fleet.lab.running(name) as vm:
        outcome = attest_once(vm.tcti, read_tcg_log(vm.log_path), fleet.url, ca=fleet.ca,
                              os_info=read_os_info())
    assert outcome.verdict == "permit" and outcome.token, outcome
    assert fleet.relay.flush()
    vm_id = fleet.vm_ids[name]
    with MonitorClient(fleet.url, ca=fleet.ca) as client:
        client.send(HealthReport(report_id=str(uuid.uuid4()), vm_id=vm_id,
                                 health_status=HealthStatus.HEALTHY, time=datetime.now(UTC),
                                 agent_version=version, attestation_token=outcome.token))
    seen = fleet.api(f"/vms/{vm_id}")
    assert seen["last_report_verified"] is True and seen["agent_version"] == version, seen


def agents_page(context: Any, fleet: Fleet, token: str = ADMIN_TOKEN) -> Any:
    """/ui/agents after signing in with ``token``; never the false sentence."""
    page = context.new_page()
    sign_in(page, fleet, token)
    page.goto(fleet.url + "/ui/agents")
    assert page.get_by_role("heading", level=1).inner_text() == "Agents"
    assert FALSE_SENTENCE not in page.inner_text("main")
    return page


def rollout_of(fleet: Fleet) -> dict[str, Any]:
    listing = fleet.api("/agent/releases")
    assert [r["version"] for r in listing["releases"]] == [NEW]
    rollout: dict[str, Any] = listing["releases"][0]["rollout"]
    return rollout


def fleet_release(fleet: Fleet) -> dict[str, Any]:
    release: dict[str, Any] = fleet.api("/agent/releases")["releases"][0]
    return release


def batch_rows(page: Any) -> list[list[str]]:
    rows = page.locator("table.batches tbody tr")
    return [[c.strip() for c in rows.nth(i).locator("th, td").all_inner_texts()]
            for i in range(rows.count())]


def test_a_published_release_and_its_rollout_are_shown(
    context: Any, keyed: Fleet, wheels: dict[str, Path], release_key: Any, tmp_path: Path
) -> None:
    page = agents_page(context, keyed)
    assert "No release published yet" in page.inner_text("main")
    # a real signed release, published as an operator does
    manifest = tmp_path / "m.json"
    keyed.cli("release", "sign", str(wheels[NEW]), "--key", str(release_key.private_pem),
              "--out", str(manifest))
    out = keyed.cli("release", "publish", str(wheels[NEW]), "--manifest", str(manifest),
                    "--monitor", keyed.url, "--ca", str(keyed.ca))
    assert out.startswith(f"published: bootwatch {NEW}")
    rollout = rollout_of(keyed)  # the API's listing opens the first batch
    assert rollout["status"] == "rolling_out" and rollout["batch_size"] == 1
    assert rollout["waiting"] == 1 and len(rollout["batches"]) == 1
    published = fleet_release(keyed)["published_at"]

    page.reload()
    main = page.inner_text("main")
    assert FALSE_SENTENCE not in main and "Releases are off" not in main
    row = page.locator("table.releases tbody tr")
    assert row.count() == 1
    cells = row.first.locator("th, td").all_inner_texts()
    assert cells[0] == NEW
    assert cells[1] == published.replace("T", " ").replace("Z", " UTC")
    assert cells[3].strip() == "rolling out"
    box = page.locator("section.rollout-box")
    assert box.get_by_role("heading", level=3).inner_text() == f"Rollout of {NEW}"
    assert box.locator(".rollout-status").inner_text().startswith("Status: rolling out")
    assert "1 VM that may take it" in box.inner_text()
    (batch,) = rollout["batches"]
    assert batch_rows(page) == [[
        "0", batch["opened_at"].replace("T", " ").replace("Z", " UTC"), "in progress", "1",
        str(batch["counts"]["pending"]), "0", "0", "0", "0", "0"]]
    assert batch["counts"]["pending"] == 1


def test_a_rollout_halted_by_an_unhealthy_upgraded_vm_says_why(
    context: Any, keyed: Fleet
) -> None:
    (batch,) = rollout_of(keyed)["batches"]
    (member,) = batch["members"]
    name = next(n for n, vm_id in keyed.vm_ids.items() if vm_id.upper() == member["vm_id"])
    # the batch's VM took the release, then booted another image: its attestation deviates
    # from its baseline, so the monitor holds it unhealthy while it runs the new version
    keyed.reboot(name, COS_OLD)
    agent_cycle(keyed, name, NEW)
    assert keyed.api(f"/vms/{member['vm_id']}")["state"] == "unhealthy"
    # the reader role sees the same page, read-only (the page re-plans: it halts here)
    page = agents_page(context, keyed, READER_TOKEN)
    rollout = rollout_of(keyed)
    assert rollout["status"] == "halted" and rollout["halt_reason"].startswith("batch 0: 1 of 1")
    assert member["vm_id"] in rollout["halt_reason"]
    box = page.locator("section.rollout-box")
    assert box.locator(".rollout-status").inner_text().startswith("Status: halted")
    assert box.locator(".halt-reason").inner_text() == (
        f"Why it halted: {rollout['halt_reason']}")
    assert batch_rows(page)[0][2:] == ["unhealthy: halts the rollout", "1", "0", "0", "0",
                                       "1", "0", "0"]
    assert page.locator("table.releases tbody tr").first.locator("td").nth(2).inner_text(
        ).strip() == "halted"
    assert page.locator("main form, main button").count() == 0  # nothing to press


def test_an_operators_halt_reason_is_shown_as_text(context: Any, keyed: Fleet) -> None:
    hostile = "<script>alert(1)</script> bad wheel"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(keyed.ca)), timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        base = f"{keyed.url}/api/v1/agent/releases/{NEW}"
        assert client.post(f"{base}/resume").status_code == 200
        r = client.post(f"{base}/halt", json={"reason": hostile})
        assert r.status_code == 200 and r.json()["halt_reason"] == hostile
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, keyed)
    page.goto(keyed.url + "/ui/agents")
    assert page.locator(".halt-reason").inner_text() == f"Why it halted: {hostile}"
    assert dialogs == []
    # resuming accepted batch 0, and the next batch opened for the other VM
    rows = batch_rows(page)
    assert [r[2] for r in rows] == ["accepted when the rollout was resumed", "in progress"]


def test_without_a_release_key_the_page_names_the_option(context: Any, fleet: Fleet) -> None:
    page = agents_page(context, fleet)
    hint = page.locator("p.releases-off")
    assert hint.count() == 1
    assert "--release-key" in hint.inner_text() and "no release key" in hint.inner_text()
    assert page.locator("table.releases").count() == 0
    # the agent versions above it are still shown
    assert page.locator("table").first.locator("tbody tr").count() >= 1


