"""The crossing leniency of quote freshness, as a review found it wanting (commit 138d103):
a late crossing overrode a newer outcome, a crossing with another verdict or a revoked
component was swallowed, and a late crossing moved last_outcome_at back (a batch and the
same events one at a time then stored different rows).  SQLite and PostgreSQL."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from bootwatch.monitor.core import Monitor
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, VmRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.outcome import OutcomeEvent, RevokedItem, Verdict

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
VM = str(uuid.UUID(int=11)).upper()
GOOD = {0: "00" * 32, 4: "04" * 32}
BAD = {0: "00" * 32, 4: "44" * 32}
AIK = "000b" + "aa" * 32


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


def _monitor(engine: Engine) -> Monitor:
    return Monitor(engine, MonitorSettings(stale_after_seconds=86400),
                   metrics=MonitorMetrics(), clock=Clock())


def _ev(event_id: str, second: int, *, reset: int, clock: int, pcrs: dict[int, str] = GOOD,
        verdict: Verdict = Verdict.PERMIT, **kw: Any) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=event_id, time=T0 + timedelta(seconds=second), provider="default",
        attestation_type="AzureGuest", verdict=verdict, reason=f"{verdict.value} {event_id}",
        policy_hash="h" * 43, vm_id=VM, pcrs=pcrs, events=(), reset_count=reset,
        secure_boot=True, tpm_clock=clock, aik=AIK, **kw)


def _rejected(event_id: str, second: int) -> OutcomeEvent:
    """The VM's evidence after a reboot, rejected (its log does not replay): not judged
    by the quote mark, applied as the VM's latest outcome."""
    return OutcomeEvent(
        event_id=event_id, time=T0 + timedelta(seconds=second), provider="default",
        attestation_type="AzureGuest", verdict=Verdict.EVIDENCE_REJECTED,
        reason="log does not replay", policy_hash="h" * 43, failed_check="log_replay",
        claimed_vm_id=VM, pcrs=BAD, reset_count=6, tpm_clock=1_000, aik=AIK)


def _state(m: Monitor) -> tuple[list[str], str | None, str]:
    with m.read() as s:
        vm = s.execute(select(VmRow.__table__).where(VmRow.vm_id == VM)).mappings().one()
        alerts = sorted(s.scalars(select(AlertRow.reason).where(
            AlertRow.vm_id == VM, AlertRow.status.in_(("active", "in_progress")))))
    return alerts, vm["last_verdict"], vm["state"]


def _ingest(m: Monitor, events: list[OutcomeEvent]) -> None:
    m.enable(VM)
    for ev in events:
        m.ingest_outcomes([ev])


# --- finding 1: the late branch ignores last_outcome_at ----------------------------------

def test_a_late_crossing_does_not_override_a_newer_outcome(engines: list[Engine]) -> None:
    """Boot A (resetCount 5) attests twice in flight: 'first' (older quote, answered
    t=20 s) and 'retry' (newer quote, answered t=16 s).  At t=30 s the VM (rebooted,
    resetCount 6) has its evidence rejected.  'retry' reaches the monitor last (two
    ingesters share the JetStream consumer; a nak'd batch comes back later).

    In answer order the VM ends on the rejection (evidence_rejected open, unhealthy).
    Delivered as above, the late-crossing branch applies 'retry' although it is 14 s
    older than the VM's latest outcome: it resolves evidence_rejected, makes boot A the
    VM's boot again and the VM healthy."""
    boot = _ev("boot", 1, reset=5, clock=5_000)
    first = _ev("first", 20, reset=5, clock=10_000)
    retry = _ev("retry", 16, reset=5, clock=25_000)
    rejected = _rejected("rejected", 30)
    in_answer_order, reordered = _monitor(engines[0]), _monitor(engines[1])
    _ingest(in_answer_order, [boot, retry, first, rejected])
    _ingest(reordered, [boot, first, rejected, retry])
    for m in (in_answer_order, reordered):
        alerts, verdict, state = _state(m)
        assert "evidence_rejected" in alerts and (verdict, state) == (
            "evidence_rejected", "unhealthy"), (alerts, verdict, state)
    assert _state(reordered) == _state(in_answer_order)


# --- finding 2: a crossing compares the PCRs, not what the service said of them -------

REVOKED = (RevokedItem(event=3, component="\\EFI\\BOOT\\BOOTX64.EFI", digest="ab" * 32,
                       reason="dbx update"),)


@pytest.mark.parametrize("what", ["revoked", "deny"])
@pytest.mark.parametrize("late", [False, True], ids=["answer-order", "late-delivery"])
def test_a_crossing_with_another_verdict_is_not_swallowed(
        engines: list[Engine], what: str, late: bool) -> None:
    """Between the two answers the service's DBX data (or its policy) changed: the
    answer at t=20 s revokes a component of the boot (or denies it).  The boot key is
    the same (PCR values, bank, resetCount), so the crossing check passes: in answer
    order the newer verdict is dropped without an alert; delivered late, the older
    permit is applied over it and resolves the high alert it raised."""
    extra: dict[str, Any] = ({"revoked": REVOKED} if what == "revoked"
                             else {"verdict": Verdict.DENY})
    expected = "revoked_boot_component" if what == "revoked" else "policy_denied"
    boot = _ev("boot", 1, reset=5, clock=5_000)
    retry = _ev("retry", 16, reset=5, clock=25_000)
    first = _ev("first", 20, reset=5, clock=10_000, **extra)
    m = _monitor(engines[0])
    _ingest(m, [boot, first, retry] if late else [boot, retry, first])
    alerts, _, state = _state(m)
    # either the newer word on the boot stands, or the pair is flagged as before
    assert expected in alerts or "quote_replayed" in alerts, (alerts, state)


# --- finding 3: last_outcome_at moved back breaks the fast path's "latest" test ---------

def _rows(m: Monitor) -> dict[str, list[tuple[Any, ...]]]:
    from bootwatch.monitor.models import BootRow, OutcomeRow
    out: dict[str, list[tuple[Any, ...]]] = {}
    with m.read() as s:
        for cls in (VmRow, BootRow, OutcomeRow, AlertRow):
            table = cls.__table__
            skip = {"id"} if cls is AlertRow else set()
            skip |= {"received_at"}
            cols = [c for c in table.columns if c.key not in skip]
            rows = s.execute(select(*cols)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


def test_after_a_late_crossing_a_batch_stores_what_one_at_a_time_stores(
        engines: list[Engine]) -> None:
    """After the late crossing, the VM's last_outcome_at (16 s) is older than its boot's
    last_seen (20 s).  The next attestation of the boot, answered at 18 s with a newer
    quote, takes the fast path when it comes alone (it is 'latest' by last_outcome_at)
    and sets the boot's verdict and reason; in a batch with the late event it takes the
    general path, which leaves them (18 s < last_seen).  The stored rows differ."""
    boot = _ev("boot", 1, reset=5, clock=5_000)
    first = _ev("first", 20, reset=5, clock=10_000)
    retry = _ev("retry", 16, reset=5, clock=25_000)
    nxt = _ev("next", 18, reset=5, clock=40_000)
    single, batch = _monitor(engines[0]), _monitor(engines[1])
    for m in (single, batch):
        m.enable(VM)
        m.ingest_outcomes([boot])
        m.ingest_outcomes([first])
    single.ingest_outcomes([retry])
    single.ingest_outcomes([nxt])
    batch.ingest_outcomes([retry, nxt])
    a, b = _rows(single), _rows(batch)
    for table in a:
        assert a[table] == b[table], table
