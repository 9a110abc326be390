"""The in-process outcome sink: the embedded server's event relay delivers here.

``deliver`` ingests a batch in one monitor transaction and returns once it is
committed, which is what the relay (``service/outbox.py``) needs before it
clears the events from the outbox; the batching (up to 500 events a
transaction) comes from the relay, so SQLite keeps up with the attestation
rate.  A failure is an :class:`~bootwatch.errors.EventDeliveryError`: the relay
keeps the events and tries again (ingestion is idempotent by ``event_id``).
An event the database refuses for good is left out and logged
(:mod:`bootwatch.monitor.poison`): the relay retries a failed batch first in
line, so it would otherwise hold back every later event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bootwatch.errors import BootwatchError, EventDeliveryError
from bootwatch.monitor.core import Monitor
from bootwatch.monitor.poison import ingest_isolating
from bootwatch.protocol.outcome import OutcomeEvent

__all__ = ["InProcessSink"]


class InProcessSink:
    def __init__(self, monitor: Monitor, *, after: Callable[[], None] | None = None) -> None:
        self.monitor = monitor
        self._after = after

    def deliver(self, events: Sequence[OutcomeEvent],
                bodies: Sequence[bytes] | None = None) -> None:
        """Ingest ``events`` (their encodings, ``bodies``, are not needed in-process)."""
        try:
            ingest_isolating(self.monitor, events)
        except BootwatchError as exc:
            raise EventDeliveryError(f"the monitor could not store outcome events: {exc}") \
                from exc
        if self._after is not None:
            self._after()  # e.g. wake the webhook dispatcher

    def close(self) -> None:
        """Nothing to release: the monitor's engine is its container's."""
