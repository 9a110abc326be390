"""The outcome-event relay: from the records' outbox to the event sink.

Each attestation record carries its encoded outcome event (column
``outcome_event``) from the same commit that the client's answer waited for.
The relay delivers committed events to the :class:`~bootwatch.service.events.EventSink`
(the monitor in-process, over HTTP, or JetStream) and then clears the column, so
"undelivered" is exactly "``outcome_event IS NOT NULL``" (a partial index keeps
finding them cheap).

Two paths, one delivery routine:

* **hand-off**: the record writer passes each group's committed (id, event, encoding)
  triples to :meth:`EventRelay.committed`; the relay thread delivers them in
  batches of up to :data:`BATCH` without reading them back.
* **sweep**: every :data:`SWEEP_INTERVAL` seconds (and at start) the relay reads
  undelivered rows older than ``orphan_after`` seconds: events of a process
  that died between commit and delivery, of another replica that died, or of
  batches the sink refused for a while.  On PostgreSQL the rows are locked
  ``FOR UPDATE SKIP LOCKED`` for the delivery, so replicas never sweep the same
  rows at once.

Delivery is at least once: a crash between the sink's acknowledgement and the
clearing redelivers the batch, and every sink's receiver is idempotent by
``event_id`` (the monitor stores each id once; JetStream de-duplicates by
message id).  A sink that is away gets the batch again after a back-off
(0.5 s doubling to 30 s); events waiting in memory beyond :data:`MAX_HELD`
are left to the sweep (they are in the database).  A batch the sink rejects
for good (:class:`~bootwatch.errors.EventRejectedError`: the receiver says it
is malformed) is cleared and logged with its event ids.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, select, update

from bootwatch.errors import BootwatchError, EventDeliveryError, EventRejectedError
from bootwatch.protocol.outcome import OutcomeEvent, decode_outcome
from bootwatch.service.db import utcnow
from bootwatch.service.logs import get_logger
from bootwatch.service.models import AttestationRecordRow

if TYPE_CHECKING:
    from bootwatch.service.db import Database
    from bootwatch.service.events import EventSink

__all__ = ["BATCH", "LINGER", "MAX_HELD", "SWEEP_INTERVAL", "EventRelay"]

#: events per delivery
BATCH = 500
#: seconds the relay waits for a fuller batch once events are held
LINGER = 0.05
#: events held in memory for delivery; beyond, the sweep takes them from the database
MAX_HELD = 50_000
#: seconds between sweeps of the outbox
SWEEP_INTERVAL = 5.0
#: back-off bounds (seconds) while the sink is away
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0

_TABLE = cast(Table, AttestationRecordRow.__table__)


class EventRelay:
    """Delivers committed outcome events to ``sink`` on one thread (module doc)."""

    def __init__(
        self,
        db: Database,
        sink: EventSink,
        *,
        orphan_after: float = 30.0,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self._db = db
        self._sink = sink
        self._orphan_after = orphan_after
        self._sweep_interval = sweep_interval
        self._cond = threading.Condition()
        #: (record id, event, its encoding from the outbox row)
        self._held: collections.deque[tuple[int, OutcomeEvent, bytes]] = collections.deque()
        self._in_flight = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        self._last_error = 0.0

    # --- the writer's side ------------------------------------------------------

    def committed(self, items: list[tuple[int, OutcomeEvent, bytes]]) -> None:
        """Hand over events whose records were just committed (never blocks)."""
        with self._cond:
            room = MAX_HELD - len(self._held)
            if room > 0:
                self._held.extend(items[:room])
            self._cond.notify()

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="bootwatch-event-relay",
                                            daemon=True)
            self._thread.start()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every handed-over event is delivered (tests, the demo)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
            while self._held or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is held (for at most ``timeout`` seconds), then stop; what is
        left stays in the outbox for the next start's sweep."""
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # --- the relay thread -------------------------------------------------------

    def _run(self) -> None:
        next_sweep = time.monotonic()  # at once: what an earlier process left behind
        while True:
            with self._cond:
                while not self._held and not self._stop:
                    left = next_sweep - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._stop:
                    return
                if self._held and len(self._held) < BATCH:
                    # the events are committed already: waiting LINGER for a fuller batch
                    # costs the monitor nothing that matters and saves a delivery (and a
                    # wake-up of this thread, and a clearing UPDATE) per few events
                    self._cond.wait_for(lambda: len(self._held) >= BATCH or self._stop,
                                        timeout=LINGER)
                    if self._stop:
                        return
                batch = [self._held.popleft() for _ in range(min(BATCH, len(self._held)))]
                self._in_flight = len(batch)
            try:
                if batch:
                    self._deliver_held(batch)
                if time.monotonic() >= next_sweep:
                    # scheduled before the sweep: a sweep that fails (the database is
                    # away) waits its interval too, instead of retrying in a busy loop
                    next_sweep = time.monotonic() + self._sweep_interval
                    self._sweep()
            except Exception as exc:  # the relay must outlive any one batch
                self._log_failure(exc)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()
            if self._backoff:
                with self._cond:
                    self._cond.wait_for(lambda: self._stop, timeout=self._backoff)

    def _deliver_held(self, batch: list[tuple[int, OutcomeEvent, bytes]]) -> None:
        ids = [i for i, _, _ in batch]
        if self._deliver([e for _, e, _ in batch], ids, [b for _, _, b in batch]):
            self._clear(ids)
        else:
            with self._cond:  # again after the back-off, first in line
                self._held.extendleft(reversed(batch))

    def _deliver(self, events: Sequence[OutcomeEvent], ids: list[int],
                 bodies: Sequence[bytes]) -> bool:
        """True when the batch is done with (delivered, or rejected for good); ``bodies``
        are the events' encodings as the outbox holds them (a sink sending bytes sends
        these rather than encoding the events again)."""
        try:
            self._sink.deliver(events, bodies)
        except EventRejectedError as exc:
            get_logger().error(
                "outcome events rejected by the sink; dropped",
                extra={"reason": str(exc), "records": ids[:20],
                       "event_ids": [e.event_id for e in events[:20]]},
            )
            return True
        except EventDeliveryError as exc:
            self._log_failure(exc)
            self._backoff = min(max(self._backoff * 2, BACKOFF_MIN), BACKOFF_MAX)
            return False
        self._backoff = 0.0
        return True

    def _clear(self, ids: list[int]) -> None:
        with self._db.session() as s:
            s.execute(update(_TABLE).where(_TABLE.c.id.in_(ids)).values(outcome_event=None))

    def _sweep(self) -> None:
        """Deliver undelivered events older than ``orphan_after`` (module doc)."""
        cutoff = utcnow() - timedelta(seconds=self._orphan_after)
        with self._cond:
            held = {i for i, _, _ in self._held}
        while not self._stop:
            with self._db.session() as s:
                query = (
                    select(_TABLE.c.id, _TABLE.c.outcome_event)
                    .where(_TABLE.c.outcome_event.is_not(None), _TABLE.c.created_at < cutoff)
                    .order_by(_TABLE.c.id)
                    .limit(BATCH)
                )
                if s.get_bind().dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                rows = [(int(i), bytes(raw)) for i, raw in s.execute(query) if i not in held]
                if not rows:
                    return
                events: list[OutcomeEvent] = []
                ids: list[int] = []
                bodies: list[bytes] = []
                for row_id, raw in rows:
                    try:
                        events.append(decode_outcome(raw))
                        ids.append(row_id)
                        bodies.append(raw)
                    except BootwatchError as exc:  # cannot happen for what we wrote
                        get_logger().error("undecodable outcome event in the outbox; dropped",
                                           extra={"record": row_id, "reason": str(exc)})
                        s.execute(update(_TABLE).where(_TABLE.c.id == row_id)
                                  .values(outcome_event=None))
                if events and not self._deliver(events, ids, bodies):
                    return  # the sink is away: the next sweep tries again
                s.execute(update(_TABLE).where(_TABLE.c.id.in_(ids)).values(outcome_event=None))
            if len(rows) < BATCH:
                return

    def _log_failure(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error >= 10.0:  # one line per 10 s while the sink is away
            self._last_error = now
            get_logger().warning("outcome events not delivered yet; retrying",
                                 extra={"reason": str(exc)})
