"""The fleet simulator end to end: real swtpm lab VMs running the real agent daemon
against a real ``bootwatch server`` (service + monitor, SQLite, HTTPS) on loopback,
with drift; the report's counts come from the monitor's API.  A second test checks
that a broken scenario file is refused with its location."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bootwatch.lab.fleet import FleetConfig, FleetSimulator, run_fleet
from bootwatch.lab.scenario import Action, ScenarioError, load_scenario, parse_scenario

from .conftest import ADMIN, STALE, Deployment

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

INTERVAL = 2.0
SCENARIO = """\
version: 1
events:
  - {at: 3s, action: image_update, vms: [0]}
  - {at: 4s, action: secure_boot_off, vms: [1]}
  - {at: 2s, action: agent_down, vms: [2], for: 13s}
  - {at: 5s, action: tamper, vms: [3], for: 6s}
  - {at: 6s, action: dbx_update, vms: [4]}
"""


@pytest.mark.parametrize("pool", [None, 2], ids=["dedicated-vtpms", "vtpm-pool"])
def test_fleet_run_detects_every_drift_and_nothing_else(
        deployment: Deployment, corpus: Path, tmp_path: Path, pool: int | None) -> None:
    scenario_file = tmp_path / "scenario.yaml"
    scenario_file.write_text(SCENARIO)
    cfg = FleetConfig(
        vms=6, interval=INTERVAL, duration=20, url=deployment.url, admin_token=ADMIN,
        scenario=load_scenario(scenario_file), corpus=corpus, lab_dir=deployment.lab.root,
        work_dir=tmp_path / "work", ca=deployment.ca, stale_after=STALE, sweep=0.5,
        grace=15, vtpm_pool=pool)
    report = run_fleet(cfg).to_json()
    detail = json.dumps(report, indent=1)
    assert report["problems"] == [], detail
    assert report["missed"] == 0, detail
    assert report["false_alerts"] == 0, detail
    assert report["ok"] is True
    assert report["undetectable"] == 0, detail
    assert report["config"]["vtpm_mode"] == ("pool" if pool else "dedicated")
    # one cause per scripted event (4 boot changes / forged logs, one silence), each
    # detected; an agent that fell behind on a loaded machine may add agent_late causes,
    # which must be detected too (missed == 0 above)
    scripted = {a: k for a, k in report["by_action"].items() if a != "agent_late"}
    assert set(scripted) == {"image_update", "secure_boot_off", "agent_down", "tamper",
                             "dbx_update"}, detail
    assert all(k["causes"] == 1 and k["detected"] == 1 for k in scripted.values()), detail
    lat = report["detection_latency_s"]
    assert lat["count"] == 4 and lat["p99"] is not None, detail
    assert lat["max"] < INTERVAL + 5, detail
    assert scripted["agent_down"]["latency_s"]["count"] == 1, detail
    assert report["cycles"]["total"] > 6 * 5
    # the simulator cleaned up: its lab VMs are gone, the monitor's VMs disabled
    assert deployment.lab.list_vms() == []


def test_broken_scenario_is_refused_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nevents:\n  - at: 10s\n    action: reboot_everything\n"
                   "    vms: 2\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(bad)
    assert (err.value.line, err.value.column, err.value.field) == (4, 13, "events[0].action")
    assert str(bad) in str(err.value)

    with pytest.raises(ScenarioError) as err:
        parse_scenario('{"events": [{"at": "5s", "action": "tamper", "vms": 1, "for": "x"}]}',
                       "s.json")
    assert err.value.field == "events[0].for" and err.value.line == 1

    # what only the fleet can judge is located too: more VMs than the fleet has
    crowded = parse_scenario("events:\n  - {at: 1s, action: tamper, vms: 2}\n"
                             "  - {at: 2s, action: agent_down, vms: [1, 2]}\n", "c.yaml")
    cfg = FleetConfig(vms=3, interval=2, duration=10, url="https://127.0.0.1:9",
                      admin_token=ADMIN, scenario=crowded, corpus=tmp_path,
                      lab_dir=tmp_path / "lab", work_dir=tmp_path)
    sim = FleetSimulator(cfg)
    with pytest.raises(ScenarioError) as err:
        sim.plan()
    assert (err.value.line, err.value.field) == (3, "events[1].vms")

    # the CLI prints the location on one line and exits 2, before touching anything
    token = tmp_path / "token"
    token.write_text(ADMIN)
    result = subprocess.run([
        sys.executable, "-m", "bootwatch.cli.main",
        "lab", "--lab-dir", str(tmp_path / "lab"), "fleet", "run", "--vms", "2",
        "--interval", "2", "--duration", "5", "--scenario", str(bad),
        "--url", "https://127.0.0.1:9", "--admin-token-file", str(token)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"{bad}:4:13: events[0].action" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lab").exists()


def test_default_scenario_covers_every_action() -> None:
    scenario = load_scenario(None)
    assert {e.action for e in scenario.events} == set(Action)


def test_dbx_update_changes_only_the_dbx_measurement(corpus: Path) -> None:
    from bootwatch.errors import LabError
    from bootwatch.eventlog.framing import parse_log
    from bootwatch.lab.drift import apply_dbx_update, dbx_update_lists

    log = (corpus / "eventlogs/go-tpm-tools/cos-93-amd-sev.bin").read_bytes()
    update = (corpus / "secureboot/DBXUpdate_amd64.bin").read_bytes()
    before, after = parse_log(log).events, parse_log(apply_dbx_update(log, update)).events
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after, strict=True)
               if (a.pcr, a.event_type, a.data, dict(a.digests))
               != (b.pcr, b.event_type, b.data, dict(b.digests))]
    assert len(changed) == 1
    old, new = changed[0]
    assert new.pcr == 7 and new.data.startswith(old.data[:16])
    assert new.data.endswith(old.data[32:] + dbx_update_lists(update))
    import hashlib
    assert new.digests[0x000B] == hashlib.sha256(new.data).digest()
    # logs it cannot rewrite faithfully are refused, not mangled: the SHA-1 record format,
    # and a digest (SM3) it cannot recompute
    for name in ("go-eventlog/linux_tpm12.bin", "tpm2-tss/binary_measurements_hcrtm.bin"):
        with pytest.raises(LabError):
            apply_dbx_update((corpus / "eventlogs" / name).read_bytes(), update)
