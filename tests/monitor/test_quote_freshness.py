"""Quote freshness (monitor/freshness.py): a replayed attestation is not the VM's boot.

An AzureGuest quote has no server nonce, so the service answers a replayed request as
it answered the original.  Before the quote mark, a VM whose boot deviated could replay
the request of its last good boot: the monitor applied that permit as the VM's latest
boot, resolved the deviation alert and called the VM healthy.  These tests hold the
attack and its neighbours (late deliveries, reboots, AIK changes, resetCount offsets,
a vTPM restored on purpose) on SQLite and PostgreSQL, one event at a time and batched.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from bootwatch.monitor.core import CheckedReport, Monitor
from bootwatch.monitor.freshness import Freshness, QuoteMark, judge, mark_of
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, OutcomeRow, VmRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.health import HealthReport, HealthStatus
from bootwatch.protocol.outcome import OutcomeEvent, Verdict, decode_outcome, encode_outcome

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
VM = str(uuid.UUID(int=11)).upper()
GOOD = {0: "00" * 32, 4: "04" * 32}
BAD = {0: "00" * 32, 4: "44" * 32}
AIK = "000b" + "aa" * 32
AIK2 = "000b" + "bb" * 32


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now


def _monitor(engine: Engine) -> Monitor:
    return Monitor(engine, MonitorSettings(stale_after_seconds=86400),
                   metrics=MonitorMetrics(), clock=Clock())


def _ev(event_id: str, second: int, *, reset: int, clock: int, pcrs: dict[int, str] = GOOD,
        aik: str = AIK, verdict: Verdict = Verdict.PERMIT) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=event_id, time=T0 + timedelta(seconds=second), provider="default",
        attestation_type="AzureGuest", verdict=verdict, reason=f"{verdict.value} {event_id}",
        policy_hash="h" * 43, vm_id=VM, pcrs=pcrs, events=(), reset_count=reset,
        secure_boot=True, tpm_clock=clock, aik=aik)


class _Vm:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _vm(m: Monitor) -> Any:
    with m.read() as s:
        row = s.execute(select(VmRow.__table__).where(VmRow.vm_id == VM)).mappings().one()
        return _Vm(dict(row))


def _open(m: Monitor) -> list[str]:
    with m.read() as s:
        return sorted(s.scalars(select(AlertRow.reason).where(
            AlertRow.vm_id == VM, AlertRow.status.in_(("active", "in_progress")))))


def _replay_alert(m: Monitor) -> Any:
    with m.read() as s:
        return _Vm(dict(s.execute(select(AlertRow.__table__).where(
            AlertRow.reason == "quote_replayed")).mappings().one()))


# --- the order of a TPM's quotes ------------------------------------------------------

MARK = QuoteMark(AIK, 5, 10_000, T0)


@pytest.mark.parametrize(("aik", "reset", "clock", "expected"), [
    (AIK, 5, 10_001, Freshness.NEWER),        # the same boot, later
    (AIK, 5, 10_000, Freshness.NOT_NEWER),    # the same quote again
    (AIK, 5, 9_999, Freshness.NOT_NEWER),     # an earlier quote of the same boot
    (AIK, 6, 1, Freshness.NEWER),             # a reboot after a disorderly shutdown
    (AIK, 4, 99_999, Freshness.NOT_NEWER),    # an earlier boot, whatever its clock
    (AIK2, 2**32 - 1, 10_001, Freshness.NEWER),   # another AIK: its resetCount is offset
    (AIK2, 6, 9_000, Freshness.NOT_NEWER),        # ... so only the clock compares
])
def test_quotes_are_ordered_by_reset_count_then_clock(aik: str, reset: int, clock: int,
                                                      expected: Freshness) -> None:
    assert judge(MARK, aik=aik, reset_count=reset, clock=clock) is expected


def test_an_offset_reset_count_wraps_forward() -> None:
    """A key outside the endorsement hierarchy quotes resetCount plus a constant: the
    boot after 0xFFFFFFFF quotes 0, which is newer, not 4 billion boots older."""
    near_top = QuoteMark(AIK, 2**32 - 1, 50, T0)
    assert judge(near_top, aik=AIK, reset_count=0, clock=60) is Freshness.NEWER
    assert judge(near_top, aik=AIK, reset_count=2**32 - 2, clock=60) is Freshness.NOT_NEWER
    assert judge(None, aik=AIK, reset_count=0, clock=0) is Freshness.NEWER


def test_the_quote_fields_cross_the_wire() -> None:
    ev = _ev("w1", 1, reset=2**32 - 1, clock=2**40)
    back = decode_outcome(encode_outcome(ev))
    assert (back.reset_count, back.tpm_clock, back.aik) == (2**32 - 1, 2**40, AIK)
    legacy = decode_outcome(encode_outcome(ev).replace(b',"tpm_clock":1099511627776', b""))
    assert legacy.tpm_clock is None


# --- the monitor ------------------------------------------------------------------------

@pytest.mark.parametrize("batched", [False, True])
def test_a_replayed_good_boot_does_not_hide_a_deviation(engines: list[Engine],
                                                        batched: bool) -> None:
    m = _monitor(engines[0])
    m.enable(VM)
    good = _ev("good", 1, reset=5, clock=10_000)
    later = _ev("later", 60, reset=5, clock=70_000)
    bad = _ev("bad", 120, reset=6, clock=80_000, pcrs=BAD)
    replay = _ev("replay", 180, reset=5, clock=10_000)    # the good boot's request again
    if batched:
        m.ingest_outcomes([good, later])
        m.ingest_outcomes([bad, replay])
    else:
        for ev in (good, later, bad, replay):
            m.ingest_outcomes([ev])
    vm = _vm(m)
    assert _open(m) == ["baseline_deviation", "quote_replayed"]
    assert vm.state == "unhealthy"
    # the replay is history only: the latest outcome and boot are still the bad boot's
    mark = mark_of(vm)
    assert (vm.last_reason, mark.reset_count, mark.clock) == ("permit bad", 6, 80_000)
    with m.read() as s:
        replayed = s.execute(select(OutcomeRow.__table__).where(
            OutcomeRow.event_id == "replay")).mappings().one()
        bad_boot = s.scalars(select(OutcomeRow.boot_id).where(
            OutcomeRow.event_id == "bad")).one()
    assert replayed["boot_id"] is None and vm.last_boot_id == bad_boot
    alert = _replay_alert(m)
    assert alert.severity == "high"
    assert ("TPM reset count 5, clock 10.000 s" in alert.description
            and "TPM reset count 6, clock 80.000 s" in alert.description)
    assert "accept-vtpm-rollback" in alert.remediation


def test_replays_keep_one_alert_and_a_fresh_quote_does_not_resolve_it(
        engines: list[Engine]) -> None:
    """Who replayed may still control the VM: the alert waits for a person."""
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 1, reset=5, clock=10_000)])
    m.ingest_outcomes([_ev("b", 2, reset=5, clock=20_000)])
    # replayed later than two attestations of one boot could cross in flight
    m.ingest_outcomes([_ev("r1", 400, reset=5, clock=10_000),
                       _ev("r2", 401, reset=5, clock=20_000)])
    assert _replay_alert(m).count == 2
    m.ingest_outcomes([_ev("c", 402, reset=5, clock=30_000)])
    assert _open(m) == ["quote_replayed"] and _vm(m).state == "unhealthy"
    assert _vm(m).last_reason == "permit c"   # the fresh quote is applied all the same


def test_late_deliveries_and_reboots_are_not_replays(engines: list[Engine]) -> None:
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("b", 20, reset=5, clock=20_000)])
    # answered before the mark's quote, delivered after it (a JetStream redelivery)
    m.ingest_outcomes([_ev("a", 10, reset=5, clock=10_000)])
    # a reboot after a disorderly shutdown: the clock went back, resetCount advanced
    m.ingest_outcomes([_ev("c", 30, reset=6, clock=15_000)])
    # a new AIK (re-enrolment) whose resetCount carries another offset
    m.ingest_outcomes([_ev("d", 40, reset=3_000_000_000, clock=16_000, aik=AIK2)])
    assert _open(m) == [] and _vm(m).state == "healthy"
    assert (mark_of(_vm(m)).aik, mark_of(_vm(m)).reset_count) == (AIK2, 3_000_000_000)


def test_outcomes_without_a_verified_quote_clock_are_not_judged(engines: list[Engine]) -> None:
    """An outcome of a service older than the quote mark (no ``tpm_clock``) and a
    rejected evidence (no verified quote) leave the mark alone."""
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 1, reset=5, clock=10_000)])
    old_service = OutcomeEvent(
        event_id="o", time=T0 + timedelta(seconds=2), provider="default",
        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="permit o",
        policy_hash="h" * 43, vm_id=VM, pcrs=GOOD, reset_count=5)
    m.ingest_outcomes([old_service])
    assert _open(m) == [] and (mark_of(_vm(m)).clock, _vm(m).last_reason) == (10_000, "permit o")


def test_accepting_a_vtpm_rollback_resolves_and_forgets_the_mark(engines: list[Engine]) -> None:
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 1, reset=9, clock=900_000)])
    # the vTPM restored from an older snapshot: every quote is behind the mark
    m.ingest_outcomes([_ev("s1", 2, reset=7, clock=700_000)])
    m.ingest_outcomes([_ev("s2", 3, reset=7, clock=701_000)])
    assert _open(m) == ["quote_replayed"] and _replay_alert(m).count == 2
    m.accept_vtpm_rollback(VM, by="ops@example")
    vm = _vm(m)
    # the mark is the restored vTPM's newest quote the alert named, not forgotten: ...
    assert mark_of(vm) == QuoteMark(AIK, 7, 701_000, T0 + timedelta(seconds=3))
    assert _open(m) == [] and vm.state == "healthy"
    alert = _replay_alert(m)
    assert alert.status == "resolved"
    assert alert.status_changed_by == "vTPM rollback accepted by ops@example"
    m.ingest_outcomes([_ev("s3", 4, reset=7, clock=702_000)])
    assert _open(m) == [] and mark_of(_vm(m)).clock == 702_000
    # ... so a replay older than the restored state is still one (found in review: a
    # forgotten mark let the next outcome of any age set it)
    m.ingest_outcomes([_ev("old", 5, reset=5, clock=500_000)])
    assert _open(m) == ["quote_replayed"] and _vm(m).last_reason == "permit s3"


def test_a_batch_stores_what_one_at_a_time_stores(engines: list[Engine]) -> None:
    """The fast path leaves a replay to the general path; both store the same rows."""
    events = [_ev("a", 1, reset=5, clock=10_000), _ev("b", 2, reset=5, clock=20_000),
              _ev("r", 400, reset=5, clock=15_000), _ev("c", 401, reset=5, clock=30_000),
              _ev("d", 800, reset=5, clock=30_000)]
    one, batch = _monitor(engines[0]), _monitor(engines[1])
    for m in (one, batch):
        m.enable(VM)
        m.ingest_outcomes(events[:2])
    for ev in events[2:]:
        one.ingest_outcomes([ev])
    batch.ingest_outcomes(events[2:])
    for m in (one, batch):
        assert _open(m) == ["quote_replayed"] and _replay_alert(m).count == 2
    a, b = vars(_vm(one)), vars(_vm(batch))
    assert a == b and mark_of(_vm(one)).clock == 30_000


def test_a_clock_set_past_2_63_and_a_sha512_aik_cross_and_are_stored(
        engines: list[Engine]) -> None:
    """Found in review: TPM2_ClockSet lets a guest's owner move Clock up to
    0xFFFF000000000000, and an AIK named with SHA-512 has 132 hex digits: such an event
    did not decode (the HTTP sink dropped its chunk) or failed its transaction (the
    in-process sink's outbox retried it for ever, holding back every later event)."""
    big = 0xFFFF000000000000
    aik512 = "000d" + "ab" * 64
    ev = _ev("big", 2, reset=5, clock=big, aik=aik512)
    assert decode_outcome(encode_outcome(ev)) == ev
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 1, reset=5, clock=10_000, aik=aik512)])
    m.ingest_outcomes([ev])
    assert mark_of(_vm(m)) == QuoteMark(aik512, 5, big, T0 + timedelta(seconds=2))
    m.ingest_outcomes([_ev("again", 400, reset=5, clock=big, aik=aik512)])
    assert _open(m) == ["quote_replayed"]


def test_a_newer_quote_answered_before_the_applied_one_shows_it_replayed(
        engines: list[Engine]) -> None:
    """Found in review: a replay answered at 101 and ingested first, then the deviating
    boot's outcome answered at 100 (late): the replay stayed the VM's boot, no alert."""
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("good", 1, reset=5, clock=10_000)])
    m.ingest_outcomes([_ev("replay", 101, reset=5, clock=20_000)])
    m.ingest_outcomes([_ev("bad", 100, reset=6, clock=5_000, pcrs=BAD)])
    assert _open(m) == ["quote_replayed"] and _vm(m).state == "unhealthy"
    alert = _replay_alert(m)
    assert "answered before it" in alert.description
    assert mark_of(_vm(m)).reset_count == 6


def test_rebinding_to_another_provider_starts_a_new_mark(engines: list[Engine]) -> None:
    m = _monitor(engines[0])
    m.enable(VM, provider="default")
    m.ingest_outcomes([_ev("a", 1, reset=9, clock=900_000)])
    m.enable(VM, provider="other")
    assert mark_of(_vm(m)) is None


def test_rejected_evidence_and_claimed_ids_are_not_judged(engines: list[Engine]) -> None:
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("a", 1, reset=5, clock=10_000)])
    claimed = OutcomeEvent(
        event_id="c", time=T0 + timedelta(seconds=2), provider="default",
        attestation_type="AzureGuest", verdict=Verdict.EVIDENCE_REJECTED, reason="bad log",
        policy_hash="h" * 43, failed_check="log_replay", claimed_vm_id=VM, pcrs=GOOD,
        reset_count=1, tpm_clock=1, aik=AIK)
    m.ingest_outcomes([claimed])
    assert _open(m) == ["evidence_rejected"] and mark_of(_vm(m)).clock == 10_000


# --- two attestations of one boot crossing in flight (the named leniency) -----------------

@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("newer_first", [True, False])
def test_attestations_of_one_boot_that_cross_in_flight_raise_no_alert(
        engines: list[Engine], batched: bool, newer_first: bool) -> None:
    """An agent gives its first request up after a timeout and retries with a fresh
    quote; the service answers the retry (newer quote) at 16 s and the first request
    (older quote) at 20 s.  Both quote the applied boot: no ``quote_replayed``, in
    either order of delivery, one at a time or batched."""
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("boot", 1, reset=5, clock=5_000)])
    first = _ev("first", 20, reset=5, clock=10_000)    # quoted first, answered last
    retry = _ev("retry", 16, reset=5, clock=25_000)
    order = [retry, first] if newer_first else [first, retry]
    if batched:
        m.ingest_outcomes(order)
    else:
        for ev in order:
            m.ingest_outcomes([ev])
    vm = _vm(m)
    assert _open(m) == [] and vm.state == "healthy"
    assert mark_of(vm).clock == 25_000    # the newest quote is the mark either way
    # the outcome applied is the newer quote's (the answer the retrying agent received)
    assert vm.last_reason == "permit retry"
    with m.read() as s:
        boots = set(s.scalars(select(OutcomeRow.boot_id).where(
            OutcomeRow.event_id.in_(("boot", "retry")))))
    assert boots == {vm.last_boot_id}


@pytest.mark.parametrize(("second", "clock", "pcrs", "reset", "why"), [
    (20, 10_000, BAD, 5, "other PCR values"),
    (20, 10_000, GOOD, 4, "an earlier boot"),
    (20 + 301, 10_000, GOOD, 5, "answered more than 5 minutes after the mark"),
    (20, 25_000 - 300_001, GOOD, 5, "quoted more than 5 minutes before the mark"),
], ids=["pcrs", "reset", "answer-gap", "clock-gap"])
def test_what_is_not_a_crossing_is_still_a_replay(
        engines: list[Engine], second: int, clock: int, pcrs: dict[int, str], reset: int,
        why: str) -> None:
    m = _monitor(engines[0])
    m.enable(VM)
    m.ingest_outcomes([_ev("boot", 1, reset=5, clock=300_000 + 5_000)])
    m.ingest_outcomes([_ev("retry", 16, reset=5, clock=300_000 + 25_000)])
    m.ingest_outcomes([_ev("old", second, reset=reset, clock=300_000 + clock, pcrs=pcrs)])
    assert _open(m) == ["quote_replayed"], why


@pytest.mark.parametrize("newer_first", [True, False])
def test_a_crossing_is_proven_by_the_token_the_retrying_agent_received(
        engines: list[Engine], newer_first: bool) -> None:
    """With token proof required, the agent that retried reports the retry's token (the
    first request's answer never reached it): that proves the VM's applied outcome."""
    clock = Clock()
    m = Monitor(engines[0], MonitorSettings(stale_after_seconds=86400,
                                            token_proof_seconds=60.0),
                metrics=MonitorMetrics(), clock=clock)
    m.enable(VM)
    first = replace(_ev("first", 20, reset=5, clock=10_000), token_id="tok-first")
    retry = replace(_ev("retry", 16, reset=5, clock=25_000), token_id="tok-retry")
    for ev in ([retry, first] if newer_first else [first, retry]):
        m.ingest_outcomes([ev])
    report = HealthReport(str(uuid.uuid4()), VM, HealthStatus.HEALTHY, T0, "1.0",
                          boot_counter=1, attestation_token="x")
    m.store_reports([CheckedReport(report, VM, True, "", "https://att.example",
                                   "tok-retry")])
    clock.now += timedelta(minutes=10)
    m.sweep()
    vm = _vm(m)
    assert vm.last_proven and _open(m) == []
