"""Outcome events the monitor's database refuses for good, kept from stalling the rest.

Every path that hands the monitor outcome events retries a failed batch: the service's
relay (in-process sink) first in line, the HTTP sink on a 5xx, JetStream by redelivery.
An event with a value no column holds (found in review: a TPM clock past 2^63, before the
column held it) failed its whole batch every time, and with it the fleet's later events.
:func:`ingest_isolating` splits a batch the database refuses and stores the rest;
:func:`refused` tells such a failure from one worth retrying (the database away, a lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.exc import DataError

from bootwatch.errors import BootwatchError, StorageError
from bootwatch.protocol.outcome import OutcomeEvent
from bootwatch.service.logs import get_logger


class _Ingests(Protocol):
    def ingest_outcomes(self, events: Sequence[OutcomeEvent]) -> list[bool]: ...

__all__ = ["ingest_isolating", "refused"]


def refused(exc: BootwatchError) -> bool:
    """Whether ``exc`` is the database refusing a value (retrying cannot help)."""
    return isinstance(exc, StorageError) and isinstance(exc.__cause__,
                                                        (DataError, OverflowError))


def ingest_isolating(monitor: _Ingests, events: Sequence[OutcomeEvent]
                     ) -> tuple[list[bool], list[str]]:
    """Ingest ``events``; a batch the database refuses is split in halves, down to the
    events refused alone, which are logged and left out.  Returns each event's stored
    flag (False for a duplicate or a refused one) and the refused events' ids; any other
    failure is raised, for the caller to retry the whole batch."""
    try:
        return monitor.ingest_outcomes(list(events)), []
    except BootwatchError as exc:
        if not refused(exc):
            raise
        if len(events) == 1:
            get_logger().error("outcome event refused by the monitor's database; dropped "
                               "(its attestation record stays with the service)",
                               extra={"event_id": events[0].event_id,
                                      "vm_id": events[0].subject_vm_id or "",
                                      "reason": str(exc)[:500]})
            return [False], [events[0].event_id]
    half = len(events) // 2
    first, bad_first = ingest_isolating(monitor, events[:half])
    second, bad_second = ingest_isolating(monitor, events[half:])
    return first + second, bad_first + bad_second
