"""Named workarounds for known firmware bugs, applied only when a raw replay fails.

Each entry names the log that needs it (house rule 3).  :func:`verify_pcrs`
tries them only for a PCR whose raw replay does not match the expected value,
and reports which one made it match; a log is never silently "fixed".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bootwatch.eventlog.model import EventType, Replay, UnverifiedEventLog
from bootwatch.eventlog.replay import hash_function

__all__ = ["DEFAULT_WORKAROUNDS", "EBS_EVENTS_MISSING", "Workaround"]

#: Signature of a workaround: (log, replay, alg_id, pcr) -> adjusted PCR value or None.
Adjust = Callable[[UnverifiedEventLog, Replay, int, int], bytes | None]


@dataclass(frozen=True, slots=True)
class Workaround:
    """A named correction for a known firmware bug."""

    name: str
    #: what the firmware did wrong, and the log in the corpus that shows it
    description: str
    #: PCRs the workaround can change
    pcrs: frozenset[int]
    adjust: Adjust


_EBS_INVOCATION = b"Exit Boot Services Invocation"
_EBS_SUCCESS = b"Exit Boot Services Returned with Success"
_EFI_ACTION = int(EventType.EV_EFI_ACTION)


def _ebs_missing(log: UnverifiedEventLog, rep: Replay, alg_id: int, pcr: int) -> bytes | None:
    """PCR5 extended with the two ExitBootServices actions the firmware did not log."""
    if pcr != 5:
        return None
    for ev in log.events:
        if ev.pcr == 5 and ev.event_type == _EFI_ACTION and ev.data == _EBS_INVOCATION:
            return None  # the events are logged: this bug is not the explanation
    fn = hash_function(alg_id)
    current = rep.pcrs.get(alg_id, {}).get(5)
    if fn is None or current is None:
        return None
    for action in (_EBS_INVOCATION, _EBS_SUCCESS):
        current = fn(current + fn(action).digest()).digest()
    return current


#: go-attestation ``attest/testdata/ebs_event_missing_eventlog`` (TestEBSVerifyWorkaround):
#: firmware extended PCR5 with the EV_EFI_ACTION events "Exit Boot Services
#: Invocation" and "Exit Boot Services Returned with Success" but did not log them.
EBS_EVENTS_MISSING = Workaround(
    name="ebs_events_missing",
    description=(
        "firmware extended PCR5 with the EV_EFI_ACTION events 'Exit Boot Services Invocation' "
        "and 'Exit Boot Services Returned with Success' without logging them "
        "(go-attestation ebs_event_missing_eventlog)"
    ),
    pcrs=frozenset({5}),
    adjust=_ebs_missing,
)

DEFAULT_WORKAROUNDS: tuple[Workaround, ...] = (EBS_EVENTS_MISSING,)
