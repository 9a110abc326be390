"""Event-level diff of a boot against a baseline (pure).

Azure says a boot "deviates from a trusted baseline"; bootwatch says which
PCR, which event, which component, and the old and new digests.  For every
PCR whose value differs, the two event sequences of that PCR are aligned by
(type, component) with :mod:`difflib`: a matched pair whose digest differs is
``changed`` (same component, new contents, e.g. an updated bootloader at the
same path); unmatched events are ``added`` or ``removed``; a replaced block
is paired position by position when the event types agree (an updated kernel
with a new path is one change, not a removal and an addition).

A PCR that the baseline quotes and the boot does not is reported as one
entry with ``event`` None: a boot that hides a PCR deviates.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bootwatch.protocol.monitor import DiffChange
from bootwatch.protocol.outcome import BootEvent

__all__ = ["DiffEntry", "diff_boot", "differing_pcrs", "matches"]


@dataclass(frozen=True)
class DiffEntry:
    """One difference; ``old_digest`` is None for an added event, ``new_digest`` for a
    removed one.  ``event`` is the new boot's event index (the baseline's for a removal)."""

    pcr: int
    event: int | None
    type: str
    component: str
    old_digest: str | None
    new_digest: str | None
    change: DiffChange

    def to_json(self) -> dict[str, object]:
        return {
            "pcr": self.pcr,
            "event": self.event,
            "type": self.type,
            "component": self.component,
            "old_digest": self.old_digest,
            "new_digest": self.new_digest,
            "change": self.change.value,
        }


def differing_pcrs(baseline: Mapping[int, str], boot: Mapping[int, str]) -> tuple[int, ...]:
    """PCRs of the baseline whose value in the boot differs or is missing.

    PCRs the boot quotes beyond the baseline's are not compared (a baseline
    says what it vouches for; docs/monitor.md).
    """
    return tuple(sorted(p for p, v in baseline.items() if boot.get(p) != v))


def matches(baseline: Mapping[int, str], boot: Mapping[int, str]) -> bool:
    """True when every PCR of the baseline has the same value in the boot."""
    return bool(baseline) and baseline.items() <= boot.items()


def _key(e: BootEvent) -> tuple[str, str]:
    return (e.type, e.component)


def _pcr_diff(pcr: int, old: Sequence[BootEvent], new: Sequence[BootEvent]) -> list[DiffEntry]:
    out: list[DiffEntry] = []

    def added(e: BootEvent) -> None:
        out.append(DiffEntry(pcr, e.index, e.type, e.component, None, e.digest,
                             DiffChange.ADDED))

    def removed(e: BootEvent) -> None:
        out.append(DiffEntry(pcr, e.index, e.type, e.component, e.digest, None,
                             DiffChange.REMOVED))

    def changed(o: BootEvent, n: BootEvent) -> None:
        component = n.component if n.component == o.component else (
            f"{o.component} -> {n.component}"
        )
        out.append(DiffEntry(pcr, n.index, n.type, component, o.digest, n.digest,
                             DiffChange.CHANGED))

    matcher = difflib.SequenceMatcher(
        a=[_key(e) for e in old], b=[_key(e) for e in new], autojunk=False
    )
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            for o, n in zip(old[a0:a1], new[b0:b1], strict=True):
                if o.digest != n.digest:
                    changed(o, n)
        elif op == "delete":
            for o in old[a0:a1]:
                removed(o)
        elif op == "insert":
            for n in new[b0:b1]:
                added(n)
        else:  # replace: pair same-type events in order, the rest added/removed
            olds, news = list(old[a0:a1]), list(new[b0:b1])
            while olds and news:
                o, n = olds[0], news[0]
                if o.type == n.type:
                    changed(o, n)
                    olds.pop(0)
                    news.pop(0)
                elif any(x.type == n.type for x in olds[1:]):
                    removed(olds.pop(0))
                else:
                    added(news.pop(0))
            for o in olds:
                removed(o)
            for n in news:
                added(n)
    return out


def diff_boot(
    baseline_pcrs: Mapping[int, str],
    baseline_events: Sequence[BootEvent],
    boot_pcrs: Mapping[int, str],
    boot_events: Sequence[BootEvent],
) -> tuple[DiffEntry, ...]:
    """Every difference of the boot against the baseline, by PCR then event order."""
    out: list[DiffEntry] = []
    for pcr in differing_pcrs(baseline_pcrs, boot_pcrs):
        if pcr not in boot_pcrs:
            out.append(
                DiffEntry(pcr, None, "PCR not quoted",
                          f"the boot's quote does not cover PCR {pcr}",
                          baseline_pcrs[pcr], None, DiffChange.REMOVED)
            )
            continue
        entries = _pcr_diff(
            pcr,
            [e for e in baseline_events if e.pcr == pcr],
            [e for e in boot_events if e.pcr == pcr],
        )
        if not entries:  # same events, different value: only possible with foreign logs
            entries = [
                DiffEntry(pcr, None, "PCR value", f"PCR {pcr} value (events identical)",
                          baseline_pcrs[pcr], boot_pcrs[pcr], DiffChange.CHANGED)
            ]
        out.extend(entries)
    return tuple(out)
