"""Monitor domain rules found by a randomised differential run (each test failed on the
code before; the run itself: scripts/fuzz_monitor.py):

- approving a boot other than the VM's current one left a healthy VM ``unhealthy``: the
  new variant was appended to a variant list of the transaction never loaded, and became
  the VM's whole set (``Monitor._add_baseline_loaded``);
- removing a variant re-pointed only the boots of VMs in its group *now*, so a VM moved
  to another group kept a dangling ``baseline_id`` that a later variant with the same id
  (ids are max + 1) turned into "approved";
- a permit or deny without a verified boot (only a claimed VM id, or no PCRs), which
  decodes, hit an assertion that failed its whole batch.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bootwatch.monitor.core import CheckedReport, Monitor
from bootwatch.monitor.db import make_engine, run_migrations
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import BaselineRow, BootRow, VmRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.health import HealthReport, HealthStatus
from bootwatch.protocol.outcome import OutcomeEvent, Verdict, decode_outcome, encode_outcome

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
VM = str(uuid.UUID(int=2)).upper()
IMAGE_A = {0: "00" * 32, 4: "04" * 32}
IMAGE_B = {0: "00" * 32, 4: "44" * 32}


def _outcome(eid: str, second: int, pcrs: dict[int, str], reset: int) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=eid, time=T0 + timedelta(seconds=second), provider="pa",
        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="permit",
        policy_hash="h" * 43, vm_id=VM, pcrs=pcrs, events=(), reset_count=reset,
        secure_boot=True, claims=(("x-ms-azurevm-is-windows", False),))


def _monitor(tmp_path: Path) -> Monitor:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    run_migrations(engine)
    return Monitor(engine, MonitorSettings(stale_after_seconds=600), metrics=MonitorMetrics(),
                   clock=lambda: T0 + timedelta(seconds=20))


def test_approving_an_older_boot_keeps_the_vm_healthy(tmp_path: Path) -> None:
    m = _monitor(tmp_path)
    m.ingest_outcomes([_outcome("e1", 10, IMAGE_B, 3), _outcome("e2", 9, IMAGE_A, 1)])
    m.enable(VM)
    with m.read() as s:
        assert s.get(VmRow, VM).state == "healthy"  # learned boot 1 (its last boot)
    m.approve(VM, boot_id=2)  # boot 2, image A: not its current boot
    with m.read() as s:
        vm = s.get(VmRow, VM)
        last = s.get(BootRow, vm.last_boot_id)
        variants = set(s.scalars(select(BaselineRow.id).where(BaselineRow.vm_id == VM)))
        assert last.baseline_id in variants  # the rows: its current boot is approved
        assert (vm.state, vm.state_reason) == (
            "healthy", "last attestation permitted; the boot matches an approved baseline")


def test_approving_an_older_boot_for_the_group_keeps_the_vm_healthy(tmp_path: Path) -> None:
    m = _monitor(tmp_path)
    m.enable(VM, group="g1")
    m.ingest_outcomes([_outcome("e1", 9, IMAGE_A, 1)])   # boot 1 learned (VM variant 1)
    m.approve(VM, group=True)                              # group variant 2 (boot 1)
    m.remove_baseline(1)                                   # boot 1 now on group variant 2
    m.ingest_outcomes([_outcome("e2", 10, IMAGE_B, 2)])   # boot 2: deviates
    m.approve(VM, boot_id=2)                               # VM variant 3: healthy
    with m.read() as s:
        assert s.get(VmRow, VM).state == "healthy"
    # back on image A (group variant 2); then boot 2 approved for the group too
    m.ingest_outcomes([_outcome("e3", 11, IMAGE_A, 1)])
    m.approve(VM, boot_id=2, group=True)
    with m.read() as s:
        vm = s.get(VmRow, VM)
        assert s.get(BootRow, vm.last_boot_id).baseline_id == 2
        assert vm.state == "healthy", vm.state_reason


A = str(uuid.UUID(int=1)).upper()
B = str(uuid.UUID(int=3)).upper()
IMAGE_0 = {0: "00" * 32, 4: "04" * 32}
IMAGE_1 = {0: "00" * 32, 4: "44" * 32}


def _outcome_of(eid: str, vm: str, second: int, pcrs: dict[int, str]) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=eid, time=T0 + timedelta(seconds=second), provider="pa",
        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="permit",
        policy_hash="h" * 43, vm_id=vm, pcrs=pcrs, events=(), reset_count=1,
        secure_boot=True, claims=(("x-ms-azurevm-is-windows", False),))


def test_a_reused_baseline_id_does_not_approve_an_unrelated_boot(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    run_migrations(engine)
    m = Monitor(engine, MonitorSettings(stale_after_seconds=600), metrics=MonitorMetrics(),
                clock=lambda: T0 + timedelta(seconds=30))
    m.enable(A, group="g1")
    m.ingest_outcomes([_outcome_of("a1", A, 1, IMAGE_0)])   # variant 1 (A's, learned)
    assert m.approve(A, group=True) == 2                  # variant 2 (g1's)
    m.remove_baseline(1)
    m.enable(A, group="g2")
    m.remove_baseline(2)                                  # A is not in g1: not re-pointed
    m.enable(B, group="g2")
    m.ingest_outcomes([_outcome_of("b1", B, 2, IMAGE_1)])   # variant 1 again (B's, learned)
    assert m.approve(B, group=True) == 2                  # variant 2 again: g2's, image 1
    m.store_reports([CheckedReport(HealthReport("r1", A, HealthStatus.HEALTHY, T0, "1.0"),
                                   A, True, "")])
    with m.read() as s:
        vm = s.get(VmRow, A)
        boot = s.get(BootRow, vm.last_boot_id)
        variants = list(s.scalars(select(BaselineRow.pcrs).where(
            (BaselineRow.vm_id == A) | (BaselineRow.group_name == "g2"))))
        assert boot.pcrs not in variants  # A's boot is approved by none of its variants
        assert vm.state != "healthy", (boot.baseline_id, vm.state_reason)




@pytest.mark.parametrize("verdict", [Verdict.PERMIT, Verdict.DENY])
@pytest.mark.parametrize("how", ["claimed-only", "verified-without-pcrs"])
def test_an_odd_verdict_event_does_not_fail_its_batch(tmp_path: Path, verdict: Verdict,
                                                       how: str) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    run_migrations(engine)
    m = Monitor(engine, MonitorSettings(stale_after_seconds=600), metrics=MonitorMetrics(),
                clock=lambda: T0 + timedelta(minutes=1))
    m.enable(VM)
    odd = OutcomeEvent(
        event_id="odd", time=T0, provider="pa", attestation_type="AzureGuest",
        verdict=verdict, reason="x", policy_hash="h" * 43,
        vm_id=VM if how == "verified-without-pcrs" else None,
        claimed_vm_id=VM if how == "claimed-only" else None)
    odd = decode_outcome(encode_outcome(odd))  # the wire accepts it
    good = OutcomeEvent(
        event_id="good", time=T0, provider="pa", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="ok", policy_hash="h" * 43,
        vm_id=str(uuid.UUID(int=4)).upper(), pcrs={0: "00" * 32}, reset_count=1)
    assert m.ingest_outcomes([good, odd]) == [True, True]
