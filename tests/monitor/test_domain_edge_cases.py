"""Review of the monitor's domain rules (monitor/core.py) on SQLite and PostgreSQL, each
test a sequence that stored a wrong fact before its fix:

- a VM that an unverified report (or an operator's action) moved to ``stale`` before the
  sweep ran never got its ``agent_unresponsive`` alert (the sweep skips stale VMs);
- an unauthenticated ``Healthy`` report after an unauthenticated platform error made a
  silent VM ``healthy`` (with its ``agent_unresponsive`` alert still open);
- a denial of a boot delivered late overwrote the boot's later verdict;
- removing the variant a boot pointed at left the VM ``unhealthy`` though the boot
  matched another approved variant (its group's);
- a VM re-enabled after rebooting into its approved image while monitoring was off
  stayed ``unhealthy`` until it attested again;
- an agent sending verified reports was recommended as ``NotInstalled`` ("never
  reported") while no attestation had reached the monitor.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from bootwatch.monitor.core import CheckedReport, Monitor
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, BootRow, RecommendationRow, VmRow
from bootwatch.monitor.recommendations import AGENT_LINUX
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.health import FailedHop, HealthReport, HealthStatus
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
VM = str(uuid.UUID(int=1)).upper()
IMAGE = {0: "00" * 32, 4: "04" * 32}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _monitor(engine: Engine, clock: Clock) -> Monitor:
    return Monitor(engine, MonitorSettings(stale_after_seconds=600), metrics=MonitorMetrics(),
                   clock=clock)


def _outcome(event_id: str, minute: float, verdict: Verdict = Verdict.PERMIT, *,
             reset: int = 1) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=event_id, time=T0 + timedelta(minutes=minute), provider="p",
        attestation_type="AzureGuest", verdict=verdict, reason=f"{verdict.value} {minute}",
        policy_hash="h" * 43, vm_id=VM, pcrs=IMAGE, events=(), reset_count=reset,
        secure_boot=True, claims=(("x-ms-azurevm-is-windows", False),))


def _unverified(report_id: str, status: HealthStatus, **kw: Any) -> CheckedReport:
    return CheckedReport(HealthReport(report_id, VM, status, T0, "1.0", **kw), VM, False,
                         "the report carries no attestation token")


def _state(m: Monitor) -> str:
    with m.read() as s:
        return str(s.scalar(select(VmRow.state).where(VmRow.vm_id == VM)))


def _open_alerts(m: Monitor) -> list[str]:
    with m.read() as s:
        return sorted(s.scalars(select(AlertRow.reason).where(
            AlertRow.vm_id == VM, AlertRow.status.in_(("active", "in_progress")))))


def test_a_vm_found_stale_before_the_sweep_still_gets_agent_unresponsive(
        engines: list[Engine]) -> None:
    clock = Clock()
    m = _monitor(engines[0], clock)
    m.enable(VM)
    m.ingest_outcomes([_outcome("o1", 0)])
    clock.now = T0 + timedelta(minutes=20)
    # an unverified report refreshes the state first: the VM is stale ...
    m.store_reports([_unverified("r1", HealthStatus.HEALTHY)])
    assert _state(m) == "stale"
    m.sweep()
    # ... and an enabled VM that went silent has its alert, whoever noticed first
    assert _open_alerts(m) == ["agent_unresponsive"]


def test_an_unverified_healthy_report_does_not_end_a_platform_error(
        engines: list[Engine]) -> None:
    clock = Clock()
    m = _monitor(engines[0], clock)
    m.enable(VM)
    m.ingest_outcomes([_outcome("o1", 0)])
    clock.now = T0 + timedelta(minutes=20)
    m.sweep()
    assert _open_alerts(m) == ["agent_unresponsive"]
    m.store_reports([_unverified("r1", HealthStatus.PLATFORM_ERROR,
                                 platform_error_message="TLS handshake failed",
                                 failed_hop=FailedHop.TLS)])
    assert _state(m) == "platform_error"  # alive, cannot attest: allowed unauthenticated
    clock.now += timedelta(minutes=1)
    m.store_reports([_unverified("r2", HealthStatus.HEALTHY)])
    assert _state(m) == "platform_error"  # never healthy on an unauthenticated word
    assert _open_alerts(m) == ["agent_unresponsive"]
    # an attestation ends the platform error and clears the alert
    clock.now += timedelta(minutes=1)
    m.ingest_outcomes([_outcome("o2", 22)])
    assert _state(m) == "healthy" and _open_alerts(m) == []


def test_a_late_denial_does_not_overwrite_the_boots_later_verdict(
        engines: list[Engine]) -> None:
    m = _monitor(engines[0], Clock(T0 + timedelta(minutes=5)))
    m.enable(VM)
    m.ingest_outcomes([_outcome("o2", 2)])
    m.ingest_outcomes([_outcome("o1", 1, Verdict.DENY)])  # older, delivered late
    with m.read() as s:
        boot = s.scalars(select(BootRow)).one()
        assert (boot.verdict, boot.reason) == ("permit", "permit 2")
    assert _state(m) == "healthy"


def test_removing_a_variant_keeps_a_boot_that_matches_another_healthy(
        engines: list[Engine]) -> None:
    m = _monitor(engines[0], Clock(T0 + timedelta(minutes=5)))
    m.enable(VM, group="g")
    m.ingest_outcomes([_outcome("o1", 1)])   # learns the VM's own variant
    group_variant = m.approve(VM, group=True)  # the group approves the same image
    assert _state(m) == "healthy"
    m.remove_baseline(group_variant)
    assert _state(m) == "healthy"            # the VM's own variant still matches
    with m.read() as s:
        assert s.scalars(select(BootRow.baseline_id)).one() not in (None, group_variant)


def test_a_vm_reenabled_after_rebooting_into_its_approved_image_is_healthy(
        engines: list[Engine]) -> None:
    m = _monitor(engines[0], Clock(T0 + timedelta(minutes=5)))
    m.enable(VM)
    m.ingest_outcomes([_outcome("o1", 1)])
    m.disable(VM)
    m.ingest_outcomes([_outcome("o2", 2, reset=2)])  # the same image, booted again
    m.enable(VM)
    assert _state(m) == "healthy"
    assert _open_alerts(m) == []


def test_an_agent_that_sends_verified_reports_is_not_reported_as_not_installed(
        engines: list[Engine]) -> None:
    """A VM attesting against a provider whose outcomes do not reach this monitor (its
    reports carry that provider's verified token) is ``not_reporting`` an attestation,
    but its agent is installed and reporting: not ``NotInstalled``, "never reported"."""
    m = _monitor(engines[0], Clock())
    m.enable(VM)
    report = HealthReport("r1", VM, HealthStatus.HEALTHY, T0, "1.0", boot_counter=1)
    m.store_reports([CheckedReport(report, VM, True, "")])
    with m.read() as s:
        code, cause = s.execute(select(RecommendationRow.code, RecommendationRow.cause).where(
            RecommendationRow.vm_id == VM, RecommendationRow.key == AGENT_LINUX.key)).one()
    assert (code, cause) == ("Healthy", "")
