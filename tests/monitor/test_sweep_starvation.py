"""The stale sweep reaches every silent VM, however many silent unhealthy VMs there are.

Found in an audit: the sweep took enabled, not-yet-stale VMs silent past the window, 5,000
at a time in no order.  A silent VM whose last verdict was a denial (or with an open
integrity alert) stays unhealthy (unhealthy outranks stale), so it was taken again on
every sweep; with 5,000 of them (denied VMs deleted while enabled, in a large fleet) a
healthy VM whose agent stopped never went stale and raised no ``agent_unresponsive``.
The audit's repro used 5,000 VMs; here the sweep's batch is 10 and 12 VMs are denied and
silent (the same rule, small), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from bootwatch.monitor.core import Monitor
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, VmRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
IMAGE = {0: "00" * 32, 4: "04" * 32}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _outcome(vm: str, at: datetime, verdict: Verdict) -> OutcomeEvent:
    return OutcomeEvent(event_id=uuid.uuid4().hex, time=at, provider="p",
                        attestation_type="AzureGuest", verdict=verdict, reason=verdict.value,
                        policy_hash="h" * 43, vm_id=vm, pcrs=IMAGE, events=(), reset_count=1,
                        secure_boot=True, claims=(("x-ms-azurevm-is-windows", False),))


def test_silent_unhealthy_vms_do_not_hide_a_vm_that_goes_stale(engines: list[Engine]) -> None:
    clock = Clock()
    m = Monitor(engines[0], MonitorSettings(), metrics=MonitorMetrics(), clock=clock)
    denied = [str(uuid.uuid4()).upper() for _ in range(12)]
    m.ingest_outcomes([_outcome(v, T0, Verdict.DENY) for v in denied])
    for v in denied:
        m.enable(v)
    victim = str(uuid.uuid4()).upper()
    clock.now = T0 + timedelta(hours=1)
    m.ingest_outcomes([_outcome(victim, clock.now, Verdict.PERMIT)])
    m.enable(victim)
    clock.now += timedelta(seconds=MonitorSettings().stale_after_seconds + 1)
    for _ in range(3):  # three sweeps of 10: before, every one took the same 10 denied
        m.sweep(limit=10)
        clock.now += timedelta(seconds=30)
    with m.read() as s:
        state = s.scalar(select(VmRow.state).where(VmRow.vm_id == victim))
        reasons = s.scalars(select(AlertRow.reason).where(AlertRow.vm_id == victim)).all()
        others = set(s.scalars(select(VmRow.state).where(VmRow.vm_id.in_(denied))))
    assert state == "stale" and list(reasons) == ["agent_unresponsive"]
    assert others == {"unhealthy"}  # still unhealthy: a denial outranks silence
    # each silence is taken up once: a further sweep finds nothing to do
    with m.read() as s:
        checked = s.scalar(select(VmRow.silence_checked_at).where(VmRow.vm_id == denied[0]))
    assert checked is not None
    assert m.sweep(limit=10) == 0


def test_a_vm_that_comes_back_and_falls_silent_again_is_swept_again(
        engines: list[Engine]) -> None:
    clock = Clock()
    m = Monitor(engines[0], MonitorSettings(), metrics=MonitorMetrics(), clock=clock)
    vm = str(uuid.uuid4()).upper()
    m.ingest_outcomes([_outcome(vm, T0, Verdict.PERMIT)])
    m.enable(vm)
    window = timedelta(seconds=MonitorSettings().stale_after_seconds + 1)
    clock.now = T0 + window
    assert m.sweep() == 1  # stale
    clock.now += timedelta(minutes=5)
    m.ingest_outcomes([_outcome(vm, clock.now, Verdict.PERMIT)])  # back
    with m.read() as s:
        assert s.scalar(select(VmRow.state).where(VmRow.vm_id == vm)) == "healthy"
    clock.now += window
    assert m.sweep() == 1  # silent again: swept again, stale again
    with m.read() as s:
        assert s.scalar(select(VmRow.state).where(VmRow.vm_id == vm)) == "stale"


def test_a_clock_step_back_does_not_hide_the_next_silence(engines: list[Engine]) -> None:
    """The sweep marks the life sign it evaluated, not its own clock: a life sign stamped
    by a clock 2 s behind the sweeper's (another process, an NTP step) came before the
    mark, and that VM was never swept again (found in review)."""
    clock = Clock()
    m = Monitor(engines[0], MonitorSettings(), metrics=MonitorMetrics(), clock=clock)
    vm = str(uuid.uuid4()).upper()
    m.ingest_outcomes([_outcome(vm, T0, Verdict.PERMIT)])
    m.enable(vm)
    window = timedelta(seconds=MonitorSettings().stale_after_seconds + 1)
    clock.now = T0 + window
    assert m.sweep() == 1  # stale
    clock.now -= timedelta(seconds=2)  # the next life sign, by a clock 2 s behind
    m.ingest_outcomes([_outcome(vm, clock.now, Verdict.PERMIT)])
    clock.now += window + timedelta(seconds=2)
    assert m.sweep() == 1
    with m.read() as s:
        assert s.scalar(select(VmRow.state).where(VmRow.vm_id == vm)) == "stale"


def test_a_clock_step_back_past_the_window_does_not_hide_the_next_silence(
        engines: list[Engine]) -> None:
    """A life sign stamped earlier than the one the sweep evaluated (the monitor's clock
    stepped back by more than the stale window) is still a new life sign (found in
    review)."""
    clock = Clock()
    m = Monitor(engines[0], MonitorSettings(), metrics=MonitorMetrics(), clock=clock)
    vm = str(uuid.uuid4()).upper()
    window = timedelta(seconds=MonitorSettings().stale_after_seconds + 1)
    clock.now = T0 + 3 * window
    m.ingest_outcomes([_outcome(vm, clock.now, Verdict.PERMIT)])
    m.enable(vm)
    clock.now += window
    assert m.sweep() == 1  # stale
    # the monitor's clock steps back by more than the window; the service's is right
    clock.now = T0
    m.ingest_outcomes([_outcome(vm, T0 + 5 * window, Verdict.PERMIT)])
    with m.read() as s:
        assert s.scalar(select(VmRow.state).where(VmRow.vm_id == vm)) == "healthy"
    clock.now += window
    assert m.sweep() == 1
    with m.read() as s:
        assert s.scalar(select(VmRow.state).where(VmRow.vm_id == vm)) == "stale"
