"""The in-process outcome sink: the embedded server's event relay delivers here.

``deliver`` ingests a batch in one monitor transaction and returns once it is
committed, which is what the relay (``service/outbox.py``) needs before it
clears the events from the outbox; the batching (up to 500 events a
transaction) comes from the relay, so SQLite keeps up with the attestation
rate.  A failure is an :class:`~bootwatch.errors.EventDeliveryError`: the relay
keeps the events and tries again (ingestion is idempotent by ``event_id``).

One event the database refuses for good (a value out of a column's range) must
not hold back every later one: the relay retries a failed batch first in line,
for ever.  So a batch that fails with such an error (SQLAlchemy's ``DataError``,
or the driver's ``OverflowError`` before the statement is sent) is split in
halves and each half delivered again; an event refused alone is logged with its
id and dropped (its attestation record stays in the service's database).  Any
other failure (the database away, a lock) is the batch's to retry, whole.
(Found in review: a TPM clock past 2^63 did that, fleet-wide, until fixed.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.exc import DataError

from bootwatch.errors import BootwatchError, EventDeliveryError
from bootwatch.monitor.core import Monitor
from bootwatch.protocol.outcome import OutcomeEvent
from bootwatch.service.logs import get_logger

__all__ = ["InProcessSink"]


class _Refused(Exception):
    """The database refused a value of the batch: not worth retrying as it is."""


class InProcessSink:
    def __init__(self, monitor: Monitor, *, after: Callable[[], None] | None = None) -> None:
        self.monitor = monitor
        self._after = after

    def deliver(self, events: Sequence[OutcomeEvent],
                bodies: Sequence[bytes] | None = None) -> None:
        """Ingest ``events`` (their encodings, ``bodies``, are not needed in-process)."""
        self._ingest(list(events))
        if self._after is not None:
            self._after()  # e.g. wake the webhook dispatcher

    def _ingest(self, events: list[OutcomeEvent]) -> None:
        try:
            self._once(events)
        except _Refused as exc:
            if len(events) > 1:
                half = len(events) // 2
                self._ingest(events[:half])
                self._ingest(events[half:])
                return
            get_logger().error("outcome event refused by the monitor's database; dropped "
                               "(its attestation record stays)",
                               extra={"event_id": events[0].event_id,
                                      "vm_id": events[0].subject_vm_id or "",
                                      "reason": str(exc)[:500]})

    def _once(self, events: list[OutcomeEvent]) -> None:
        try:
            self.monitor.ingest_outcomes(events)
        except OverflowError as exc:  # pysqlite: an integer no SQLite column holds
            raise _Refused(f"{exc.__class__.__name__}: {exc}") from exc
        except BootwatchError as exc:
            if isinstance(exc.__cause__, DataError):
                raise _Refused(str(exc)) from exc
            raise EventDeliveryError(f"the monitor could not store outcome events: {exc}") \
                from exc

    def close(self) -> None:
        """Nothing to release: the monitor's engine is its container's."""
