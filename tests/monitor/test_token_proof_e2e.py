"""Token proof end to end: a real swtpm lab VM, the real agent daemon (``agent run
--once``), the embedded server with ``token_proof_seconds`` over HTTPS on loopback.

A quote taken during a good boot and sent later is newer than every quote the monitor
saw, so the quote mark lets it through; its answer is sealed to an ephemeral key only the
quoted boot unlocks.  Here the quote is sent without being opened (as a stockpiled quote
from an earlier boot would be): no report carries its token, and the monitor says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bwdeploy import EVENTLOGS, Deployment, DeploymentFactory

from bootwatch.agent.client import AttestationClient
from bootwatch.agent.evidence import collect_evidence
from bootwatch.lab import Lab

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

COS93 = EVENTLOGS / "go-tpm-tools/cos-93-amd-sev.bin"
PROOF = 2.0


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """SQLite only: the rules run on PostgreSQL in test_token_proof.py."""
    yield f"sqlite:///{tmp_path_factory.mktemp('proof-db') / 'bootwatch.db'}", ""


def _agent_cycle(dep: Deployment, lab: Lab, name: str, state: Path) -> None:
    cmd = [sys.executable, "-c", "from bootwatch.cli.main import main; main()",
           "agent", "run", "--once", "--lab-vm", name, "--url", dep.url, "--ca", dep.ca,
           "--monitor-url", dep.url, "--monitor-ca", dep.ca, "--state-dir", str(state)]
    env = dict(os.environ, BOOTWATCH_LAB_DIR=str(lab.root))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert dep.relay.flush()


def _open(dep: Deployment, vm_id: str) -> list[str]:
    return sorted(a["reason"] for a in dep.alerts(vm=vm_id, status="open"))


def test_an_attestation_whose_token_never_comes_back_is_an_alert(
        deploy: DeploymentFactory, lab: Lab, tmp_path: Path) -> None:
    dep = deploy(token_proof_seconds=PROOF, sweep_interval_seconds=0.2)
    vm_id = lab.create_vm("prover", COS93).vm_id.upper()
    with dep.client() as c:
        assert c.post(f"/api/v1/vms/{vm_id}/enable", json={"name": "prover"}).status_code \
            == 200
    # the agent attests, opens the token and reports it: proven
    _agent_cycle(dep, lab, "prover", tmp_path)
    time.sleep(PROOF + 1)
    v = dep.vm(vm_id)
    assert v["state"] == "healthy" and _open(dep, vm_id) == [], v["state_reason"]
    # quotes sent by something that does not open their answers (a stockpile, sent as a
    # stream so that the VM keeps looking alive)
    for _ in range(2):
        with lab.running("prover") as running:
            body = collect_evidence(running.tcti, tcg_log=running.log_path.read_bytes()
                                    ).request_body()
        with AttestationClient(dep.url, ca=Path(dep.ca)) as client:
            client.attest_azure_guest(body)
        assert dep.relay.flush()
        time.sleep(0.5)
    assert dep.vm(vm_id)["state"] == "healthy"          # within the window
    deadline = time.monotonic() + 30
    while _open(dep, vm_id) != ["attestation_unproven"]:
        assert time.monotonic() < deadline, f"no alert: {_open(dep, vm_id)}"
        time.sleep(0.3)
    v = dep.vm(vm_id)
    assert v["state"] == "unhealthy"
    (alert,) = dep.alerts(vm=vm_id, status="open")
    assert alert["severity"] == "high" and alert["extendedProperties"]["tokenId"]
    # the agent's next cycle proves its own attestation: resolved
    _agent_cycle(dep, lab, "prover", tmp_path)
    assert _open(dep, vm_id) == [] and dep.vm(vm_id)["state"] == "healthy"
