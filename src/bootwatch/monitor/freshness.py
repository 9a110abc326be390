"""Quote freshness: is a VM's verified quote newer than every quote seen from it before?

Why: an AzureGuest quote carries no server nonce (MAA's protocol takes it with empty
qualifying data), so a verifier answers a replayed request as it answered the original.
The token it issues is useless to the replayer (sealed to an ephemeral key that only the
old boot's PCRs unlock), but the outcome event is not: a VM whose boot was tampered with
could replay the request of its last good boot and read as healthy.  The monitor keeps,
per VM, a high-water mark of the TPM's quoted state and treats a quote that does not
advance it as a replay (or a vTPM restored from a snapshot, which looks the same).

Order.  A TPM quote carries ``TPMS_CLOCK_INFO``: ``resetCount`` (incremented at every
TPM Reset, that is every boot that did not resume), ``clock`` (milliseconds the TPM has
run, never set back while it runs, saved at an orderly shutdown) and the AIK's name.
Quotes of one TPM are ordered by (resetCount, clock): within a reset the clock only
advances; a disorderly shutdown may set the clock back to its last saved value, but the
boot after it is a TPM Reset, so resetCount advances.  A quote whose pair is equal to
the mark is the same quote again.

Two catches.  A key outside the endorsement and platform hierarchies quotes resetCount
plus a per-key constant (TPM 2.0 Part 1, "obfuscation"), so resetCount is compared in
UINT32 arithmetic (newer when ahead by less than 2^31) and only between quotes of the
same AIK; across an AIK change (re-enrolment, a new vTPM) only the clock, which is never
offset, is compared.  And a vTPM restored from a snapshot, or cleared, goes back in all
of them: only a person can tell that from a replay (``vm accept-vtpm-rollback``).

One leniency, named: :func:`may_have_crossed`.  Two attestations of one boot can cross
in flight (an agent's retry after a timeout while the first request is still being
answered, or a manual run beside the daemon): the older quote is answered second.  When
the two quotes share the AIK and resetCount and lie within :data:`CROSSING_WINDOW` of
each other by clock and by answer, and the caller has checked that both quote the same
PCR values, the older one says nothing the newer one does not: it is history only and no
alert is raised.  A replay of that kind gains nothing (the state it shows is the state
applied); a vTPM restored to such a near point goes past the mark within the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Final, Protocol

from bootwatch.monitor.db import as_utc
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

__all__ = [
    "CROSSING_WINDOW",
    "Freshness",
    "MarkedVm",
    "ProvenVm",
    "QuoteMark",
    "Stale",
    "advance",
    "judge",
    "mark_of",
    "may_have_crossed",
    "note_report_token",
    "note_token",
    "set_mark",
]

_HALF: Final = 2**31
_MOD: Final = 2**32


class Freshness(Enum):
    """How a quote stands against the VM's mark."""

    #: newer than the mark (or no mark yet): it becomes the mark
    NEWER = "newer"
    #: not newer than the mark: a replay, a vTPM rolled back, or a late delivery
    NOT_NEWER = "not_newer"


@dataclass(frozen=True)
class QuoteMark:
    """The newest quote seen from a VM: its AIK's name, resetCount, clock, and the time
    the service answered it."""

    aik: str
    reset_count: int
    clock: int
    at: datetime

    def describe(self) -> str:
        return f"TPM reset count {self.reset_count}, clock {_seconds(self.clock)}"


def _seconds(clock_ms: int) -> str:
    return f"{clock_ms / 1000:.3f} s"


def judge(mark: QuoteMark | None, *, aik: str, reset_count: int, clock: int) -> Freshness:
    """Whether a quote (its AIK's name, resetCount and clock) advances ``mark``."""
    if mark is None:
        return Freshness.NEWER
    if aik != mark.aik:
        # resetCount may carry another key's offset: only the clock compares
        return Freshness.NEWER if clock > mark.clock else Freshness.NOT_NEWER
    ahead = (reset_count - mark.reset_count) % _MOD
    if ahead == 0:
        return Freshness.NEWER if clock > mark.clock else Freshness.NOT_NEWER
    return Freshness.NEWER if ahead < _HALF else Freshness.NOT_NEWER



class MarkedVm(Protocol):
    """The VM columns that hold its mark (``VmRow``, or the fast path's loaded copy)."""

    quote_aik: str | None
    quote_reset_count: int | None
    quote_clock: int | None
    quote_at: datetime | None


#: TPMS_CLOCK_INFO.clock is a UINT64 (a guest's owner can set it forward, up to
#: 0xFFFF000000000000): the column is a signed BIGINT, so it holds clock - 2^63, which
#: keeps the order and every value (found in review: a clock past 2^63 - 1 made the event
#: undecodable and stalled the service's outbox)
_CLOCK_OFFSET: Final = 2**63


def mark_of(vm: MarkedVm) -> QuoteMark | None:
    if (vm.quote_aik is None or vm.quote_reset_count is None or vm.quote_clock is None
            or vm.quote_at is None):
        return None
    return QuoteMark(vm.quote_aik, vm.quote_reset_count, vm.quote_clock + _CLOCK_OFFSET,
                     as_utc(vm.quote_at))


def set_mark(vm: MarkedVm, mark: QuoteMark | None) -> None:
    """Store ``mark`` in ``vm``'s columns (None: forget it)."""
    if mark is None:
        vm.quote_aik = vm.quote_reset_count = vm.quote_clock = None
        vm.quote_at = None
        return
    vm.quote_aik = mark.aik
    vm.quote_reset_count = mark.reset_count
    vm.quote_clock = mark.clock - _CLOCK_OFFSET
    vm.quote_at = mark.at


@dataclass(frozen=True)
class Stale:
    """A quote that shows a replay: ``replayed`` is the outcome's quote that was replayed,
    ``newer`` the quote it is older than.

    ``late`` False: this outcome's quote is not newer than the mark (``newer``) though
    it was answered after it: this outcome replays.  ``late`` True: this outcome's quote
    is newer than the mark (``replayed``) though it was answered before it: the mark's
    outcome, already applied, replayed (it was ingested first)."""

    replayed: QuoteMark
    newer: QuoteMark
    late: bool


#: the most two quotes of one boot, and their answers, may lie apart and still be taken
#: for two attestations that crossed in flight (the agent gives a request up after 15 s
#: by default and retries with a fresh quote; a proxy or a busy service may hold the first
#: one longer): 5 minutes
CROSSING_WINDOW: Final = timedelta(minutes=5)
_CROSSING_MS: Final = int(CROSSING_WINDOW.total_seconds() * 1000)


def may_have_crossed(stale: Stale) -> bool:
    """Could ``stale`` be two honest attestations of one boot that crossed in flight?

    True when both quotes come from the same AIK with the same resetCount (one boot of
    one TPM), their clocks differ by at most :data:`CROSSING_WINDOW` and so do the times
    they were answered.  The caller must also check that both quote the same PCR values:
    only then does the older one add nothing to what is applied."""
    a, b = stale.replayed, stale.newer
    return (a.aik == b.aik and a.reset_count == b.reset_count
            and abs(b.clock - a.clock) <= _CROSSING_MS
            and abs(b.at - a.at) <= CROSSING_WINDOW)


def advance(vm: MarkedVm, ev: OutcomeEvent) -> Stale | None:
    """Move ``vm``'s mark to ``ev``'s quote when it is newer; say so when the two orders
    (of the quotes, of the answers) disagree, which only a replay does.

    Not judged: an outcome without a verified quote of a verified VM (rejected evidence,
    a claimed VM id, or a service older than this monitor: no ``tpm_clock``; named in
    docs/monitor.md).  A late delivery older by both orders is history only, as every
    late event is."""
    if (ev.tpm_clock is None or ev.reset_count is None or not ev.aik or not ev.pcrs
            or not ev.vm_id or ev.verdict is Verdict.EVIDENCE_REJECTED):
        return None
    mark = mark_of(vm)
    quote = QuoteMark(ev.aik, ev.reset_count, ev.tpm_clock, ev.time)
    if judge(mark, aik=ev.aik, reset_count=ev.reset_count, clock=ev.tpm_clock) \
            is Freshness.NEWER:
        set_mark(vm, quote)
        if mark is not None and ev.time < mark.at:
            return Stale(replayed=mark, newer=quote, late=True)
        return None
    assert mark is not None  # judge() says NEWER without one
    if ev.time < mark.at:
        return None
    return Stale(replayed=quote, newer=mark, late=False)


class ProvenVm(Protocol):
    """The VM columns of the token proof (``VmRow``, or the fast path's loaded copy)."""

    last_token_id: str | None
    reported_token_id: str | None
    last_proven: bool
    unproven_since: datetime | None
    unproven_alerted_at: datetime | None


def note_token(vm: ProvenVm, ev: OutcomeEvent, now: datetime) -> None:
    """The VM's latest outcome is ``ev`` (ingested at ``now``): its token is proven when
    a verified report carried it already (the report may arrive first); a permit not
    proven starts, or continues, the VM's unproven stretch."""
    vm.last_token_id = ev.token_id or None
    vm.last_proven = bool(ev.token_id) and ev.token_id == vm.reported_token_id
    if vm.last_proven:
        vm.unproven_since = vm.unproven_alerted_at = None
    elif ev.token_id and vm.unproven_since is None:
        vm.unproven_since = now


def note_report_token(vm: ProvenVm, token_id: str) -> bool:
    """A verified report carried the token ``token_id``: remember it (its outcome may
    come later) and, when it is the token of the VM's latest outcome, end the unproven
    stretch.  Returns whether the latest outcome is proven now."""
    vm.reported_token_id = token_id
    if token_id == vm.last_token_id:
        vm.last_proven = True
        vm.unproven_since = vm.unproven_alerted_at = None
    return vm.last_proven
