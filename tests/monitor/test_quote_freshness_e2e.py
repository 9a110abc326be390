"""A replayed attestation end to end: a real swtpm lab VM, the real agent's evidence,
the embedded server over HTTPS on loopback (SQLite), the CLI.

The attack: the VM boots a good image and attests; its boot is then changed (the
monitor raises a baseline deviation); software in the VM sends the good boot's
recorded request again.  The service answers it as MAA does (its token is sealed to
the old boot's ephemeral key, useless now), and before the quote mark the monitor took
that permit as the VM's latest boot: the deviation resolved and the VM read healthy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from bwdeploy import ADMIN, EVENTLOGS, Deployment, DeploymentFactory
from click.testing import CliRunner

from bootwatch.agent.client import AttestationClient
from bootwatch.agent.evidence import collect_evidence
from bootwatch.cli.main import cli
from bootwatch.lab import Lab

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

COS93 = EVENTLOGS / "go-tpm-tools/cos-93-amd-sev.bin"
COS101 = EVENTLOGS / "go-tpm-tools/cos-101-amd-sev.bin"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """SQLite only: the monitor's freshness rules run on PostgreSQL in
    test_quote_freshness.py; this module shows the attack through every real part."""
    yield f"sqlite:///{tmp_path_factory.mktemp('fresh-db') / 'bootwatch.db'}", ""


def _send(dep: Deployment, body: bytes) -> None:
    with AttestationClient(dep.url, ca=Path(dep.ca)) as client:
        client.attest_azure_guest(body)   # 200: a ServiceError otherwise
    assert dep.relay.flush(), "the monitor did not ingest the outcome"


def test_a_replayed_request_is_an_alert_not_the_vms_boot(
        deploy: DeploymentFactory, lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    dep = deploy()
    vm = lab.create_vm("replayer", COS93)
    vm_id = vm.vm_id.upper()
    with dep.client() as c:
        assert c.post(f"/api/v1/vms/{vm_id}/enable", json={"name": "replayer"}).status_code \
            == 200
    # the good boot's request, as the agent builds it; sent once, recorded by the attacker
    with lab.running("replayer") as running:
        recorded = collect_evidence(running.tcti,
                                    tcg_log=running.log_path.read_bytes()).request_body()
    _send(dep, recorded)
    assert dep.attest("replayer").verdict == "permit"     # a later quote of the same boot
    v = dep.vm(vm_id)
    assert v["state"] == "healthy", v["state_reason"]
    mark = v["quote_mark"]
    assert mark["aik"].startswith("000b") and mark["clock_ms"] > 0
    # the boot changes: the monitor says so
    lab.reboot_vm("replayer", COS101)
    assert dep.attest("replayer").verdict == "permit"
    bad = dep.vm(vm_id)
    assert bad["state"] == "unhealthy"
    assert bad["quote_mark"]["reset_count"] > mark["reset_count"]
    # the replay: answered 200 by the service, and not taken as the VM's boot
    _send(dep, recorded)
    v = dep.vm(vm_id)
    open_reasons = sorted(a["reason"] for a in v["alerts"] if a["status"] == "active")
    assert open_reasons == ["baseline_deviation", "quote_replayed"], v["state_reason"]
    assert v["state"] == "unhealthy" and v["last_boot"] == bad["last_boot"]
    assert v["quote_mark"] == bad["quote_mark"]
    (replayed,) = [a for a in v["alerts"] if a["reason"] == "quote_replayed"]
    assert replayed["severity"] == "high"
    replayed_clock = int(replayed["extendedProperties"]["replayedClockMs"])
    # the lab's reboot restarts swtpm: its clock restarts from the last saved value, and
    # the reset count orders the quotes
    assert int(replayed["extendedProperties"]["replayedResetCount"]) == mark["reset_count"]
    assert f"TPM reset count {mark['reset_count']}" in replayed["description"]
    assert replayed["extendedProperties"]["newerResetCount"] == str(
        bad["quote_mark"]["reset_count"])
    # an operator who knows the vTPM was restored on purpose says so; the deviation stays
    monkeypatch.setenv("BOOTWATCH_MONITOR", dep.url)
    monkeypatch.setenv("BOOTWATCH_MONITOR_CA", dep.ca)
    monkeypatch.setenv("BOOTWATCH_MONITOR_TOKEN", ADMIN)
    res = CliRunner().invoke(cli, ["vm", "accept-vtpm-rollback", vm_id])
    assert res.exit_code == 0, res.output
    assert "vTPM rollback accepted for replayer" in res.output
    res = CliRunner().invoke(cli, ["alert", "list", "--vm", vm_id, "--status", "open",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert [a["reason"] for a in json.loads(res.output)] == ["baseline_deviation"]
    # the mark is now the replayed quote (the restored vTPM's, as the operator says)
    assert dep.vm(vm_id)["quote_mark"]["clock_ms"] == replayed_clock
