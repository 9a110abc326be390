"""Attestation records: one row per attestation request.

Public API (stable names) for the attestation handlers:

* :class:`AttestationRecord` -- what to store: ``provider``, ``attestation_type``,
  ``verdict`` (:class:`Verdict` of ``protocol/verdict.py``: permit, deny,
  evidence_rejected), ``reason``, ``vm_id``,
  ``policy_hash``, ``evidence`` (raw request bytes; the handler passes it only for
  requests that parsed as evidence; kept for ``Settings.evidence_retention_seconds``
  and within the evidence quota), ``client`` (the address it came from).
* :func:`record_attestation` ``(writer, metrics, record)`` -- hand it to the worker's
  :class:`RecordWriter` and count the verdict in the
  ``bootwatch_attestation_verdicts_total`` metric; returns the record's
  :class:`Commit`, which the handler awaits before answering.
* :func:`store_record` -- insert one record now (synchronous; tests, tools).
* :func:`purge_expired_evidence` -- drop evidence past its retention (run by
  the app periodically and by ``bootwatch service purge``).
* :func:`enforce_evidence_quota` -- drop the oldest evidence of a client beyond
  ``Settings.evidence_quota_per_client_bytes`` and the oldest of all beyond
  ``Settings.evidence_quota_total_bytes`` (the writer runs it, see below).

Evidence quota: evidence is the one thing an anonymous caller can make the service
store in bulk, so what is kept is bounded per client address and in total; the
oldest evidence is dropped first (the record itself, verdict and reason, stays),
and every drop is counted in ``bootwatch_evidence_dropped_total{reason}``.  The
writer checks a client's share once that client has added a sixteenth of its
quota since the last check, and the total once a sixteenth of the total quota
has been added (so the checks stay cheap under load); between checks each
worker can overshoot by at most that sixteenth.

Why a writer thread, and why the request still waits for it: an insert and its
commit cost ~0.5 ms, most of it waiting on the disk (fsync) or the server.  The
writer takes records from a bounded in-memory queue and commits them in groups
(one ``executemany`` and one commit for everything that arrived while the
previous group was being committed) on its own thread, where the database
driver releases the GIL while it waits; each request awaits its record's
:class:`Commit` before it is answered.  So an answered attestation (200, a
deny, a rejection) has a committed record, and, when the service has an event
sink, a committed outcome event in the same row (the outbox: the event relay,
``service/outbox.py``, delivers it and then clears it): a kill -9 of the process
loses nothing that was answered (issue 15; tests/scale/test_kill.py).  The record
keeps the time of the request, not of the insert.

When the write fails (the database is away), every request of that group is
answered 503 with ``Retry-After`` instead of a verdict it could not record, and
counted in ``bootwatch_attestation_records_failed_total``.  When the queue is
full (the database is slower than the traffic) a record is written in the
request's own thread instead, counted in
``bootwatch_attestation_records_overflow_total``: nothing is dropped, the
worker slows down.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from bootwatch.errors import StorageError
from bootwatch.protocol.outcome import OutcomeEvent, encode_outcome
from bootwatch.protocol.verdict import Verdict
from bootwatch.service.db import utcnow
from bootwatch.service.logs import get_logger
from bootwatch.service.models import AttestationRecordRow

if TYPE_CHECKING:
    from bootwatch.service.db import Database
    from bootwatch.service.metrics import Metrics
    from bootwatch.service.settings import Settings

__all__ = [
    "BATCH",
    "BUSY_WINDOW",
    "GROUP",
    "LINGER",
    "MAX_QUEUED",
    "MAX_QUEUED_BYTES",
    "MAX_REASON",
    "QUOTA_CHECK_FRACTION",
    "AttestationRecord",
    "Commit",
    "CommitHook",
    "RecordWriter",
    "enforce_evidence_quota",
    "purge_expired_evidence",
    "record_attestation",
    "store_record",
]

MAX_REASON = 4000
#: most records waiting for the writer (beyond: written synchronously)
MAX_QUEUED = 10_000
#: most evidence bytes waiting for the writer (evidence is ~125 KB per request)
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: records per insert statement (one group commit)
BATCH = 500
#: under load, the writer waits up to LINGER seconds for GROUP records before a commit
LINGER = 0.004
GROUP = 16
#: "under load": the previous commit ended less than this many seconds ago
BUSY_WINDOW = 0.02

_TABLE = cast(Table, AttestationRecordRow.__table__)  # Core statements: no ORM unit of work
_INSERT = insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)


@dataclass(frozen=True)
class AttestationRecord:
    provider: str
    attestation_type: str
    verdict: Verdict
    reason: str = ""
    vm_id: str | None = None
    policy_hash: str | None = None
    evidence: bytes | None = None
    #: the client's address (the evidence quota is per client)
    client: str | None = None
    #: the outcome event for the monitor, kept in the outbox until the relay delivered
    #: it (None when the service has no event sink)
    outcome: OutcomeEvent | None = None
    #: the id the answer names (``x-bootwatch-request-id``)
    request_id: str | None = None


#: evidence quota checks run once this fraction of a quota was added since the last one
QUOTA_CHECK_FRACTION = 16


def _keeps_evidence(settings: Settings) -> bool:
    return (
        settings.evidence_retention_seconds > 0
        and settings.evidence_quota_per_client_bytes > 0
        and settings.evidence_quota_total_bytes > 0
    )


def _row(record: AttestationRecord, now: datetime, settings: Settings) -> dict[str, Any]:
    """The column values of one record (evidence dropped when nothing may be kept)."""
    retention = settings.evidence_retention_seconds
    keep = record.evidence is not None and _keeps_evidence(settings)
    return {
        "provider": record.provider,
        "created_at": now,
        "attestation_type": record.attestation_type,
        "vm_id": record.vm_id[:128] if record.vm_id else None,
        "verdict": Verdict(record.verdict).value,
        "reason": record.reason[:MAX_REASON],
        "policy_hash": record.policy_hash,
        "evidence": record.evidence if keep else None,
        "evidence_expires_at": now + timedelta(seconds=retention) if keep else None,
        "evidence_bytes": len(record.evidence) if keep and record.evidence is not None else None,
        "client": record.client[:64] if record.client else None,
        "outcome_event": encode_outcome(record.outcome) if record.outcome is not None else None,
        "request_id": record.request_id,
    }


def store_record(
    db: Database, settings: Settings, record: AttestationRecord, now: datetime | None = None
) -> int:
    """Insert one record now; evidence is dropped when retention is 0. Returns the row id."""
    values = _row(record, now or utcnow(), settings)
    with db.session() as s:
        result = s.execute(insert(_TABLE).values(**values).returning(_TABLE.c.id))
        return int(result.scalar_one())


class Commit:
    """The answer to "is this record durable yet?": resolved by the writer once the
    batch holding the record is committed (``error`` None) or has failed (``error``
    the :class:`~bootwatch.errors.StorageError`).  The attestation route awaits it
    before answering, so an answer implies a committed record (and outbox event).
    """

    __slots__ = ("_done", "_lock", "_waiters", "error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.error: StorageError | None = None

    def settle(
        self, error: StorageError | None
    ) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        """Mark resolved; returns the event-loop waiters to wake (the writer wakes a
        whole group's waiters with one call per event loop, see :func:`_wake`)."""
        with self._lock:
            if self._done.is_set():
                return []
            self.error = error
            self._done.set()
            waiters, self._waiters = self._waiters, []
        return waiters

    async def wait(self) -> None:
        """Return once committed; raise the StorageError of a failed write."""
        future: asyncio.Future[None] | None = None
        with self._lock:
            if not self._done.is_set():
                future = asyncio.get_running_loop().create_future()
                self._waiters.append((future.get_loop(), future))
        if future is not None:
            await future
        if self.error is not None:
            raise self.error

    def wait_sync(self, timeout: float) -> bool:
        """Block until resolved (tools and tests); False on timeout."""
        return self._done.wait(timeout)


def _settle_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        loop.call_soon_threadsafe(_settle_all, futures)


@dataclass
class _Pending:
    values: dict[str, Any]
    event: OutcomeEvent | None
    commit: Commit


#: called with (record id, event) of every committed record that carries an event
#: receives (record id, outcome event, its encoding as stored) for each committed record
CommitHook = Callable[[list[tuple[int, OutcomeEvent, bytes]]], None]


class RecordWriter:
    """Writes attestation records in group commits on a background thread (see the
    module doc).

    Started on the first :meth:`submit`; :meth:`flush` waits until everything
    submitted so far is stored (tests, shutdown); :meth:`close` flushes and
    stops the thread.  ``metrics``, when set, counts overflows and failures;
    ``on_commit``, when set (the event relay), receives the committed events.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        on_commit: CommitHook | None = None,
        max_queued: int = MAX_QUEUED,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self._db = db
        self._settings = settings
        self._max_queued = max_queued
        self._max_bytes = max_queued_bytes
        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._submitted = 0
        self._done = 0  # written or given up on
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_warning = 0.0
        self.metrics = metrics
        self.on_commit = on_commit
        #: the writer thread's own connection (opened on first use, again after an error)
        self._conn: Connection | None = None
        #: evidence bytes written since the last quota check, per client and in total
        self._quota_lock = threading.Lock()
        self._since_check: dict[str | None, int] = {}
        self._since_total_check = 0

    def submit(self, record: AttestationRecord) -> Commit:
        """Queue ``record`` (stamped now) for the next group commit; written in the
        caller's thread when the queue is full.  Await the returned :class:`Commit`
        before answering the client."""
        values = _row(record, utcnow(), self._settings)
        size = len(values["evidence"] or b"") + len(values["outcome_event"] or b"")
        commit = Commit()
        item = _Pending(values, record.outcome, commit)
        with self._cond:
            full = (
                len(self._pending) >= self._max_queued
                or self._pending_bytes + size > self._max_bytes
                or self._stopping
            )
            if not full:
                self._ensure_thread()
                self._pending.append(item)
                self._pending_bytes += size
                self._submitted += 1
                if len(self._pending) in (1, GROUP):
                    self._cond.notify_all()
                return commit
        self._overflow(item)
        return commit

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every record submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._thread = None
            self._stopping = False
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError):
                conn.close()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._pending)

    # --- internals -------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="bootwatch-record-writer", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        # group commit: whatever arrived while the previous group was being committed
        # makes the next group; under load (the previous commit ended moments ago) the
        # writer lingers up to LINGER for a fuller group, because each commit and each
        # wake-up of this thread costs the worker's event loop the GIL (measured: a
        # commit per request cost ~1 ms of CPU per attestation, a group of ~8 ~0.1 ms)
        last_commit = 0.0
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending and self._stopping:
                    return
                if not self._stopping and time.monotonic() - last_commit < BUSY_WINDOW:
                    deadline = time.monotonic() + LINGER
                    while len(self._pending) < GROUP and not self._stopping:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                self._pending_bytes -= sum(
                    len(p.values["evidence"] or b"") + len(p.values["outcome_event"] or b"")
                    for p in batch
                )
            self._write(batch)
            last_commit = time.monotonic()
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[_Pending], *, own_connection: bool = True) -> None:
        error: StorageError | None = None
        ids: list[int] = []
        try:
            rows = [p.values for p in batch]
            ids = self._insert(rows) if own_connection else self._insert_once(rows)
        except StorageError as exc:
            error = exc
        except Exception as exc:  # the writer thread must outlive any one batch
            error = StorageError(f"attestation records not stored: {exc.__class__.__name__}")
        if error is not None:
            get_logger().error(
                "attestation records not stored",
                extra={"records": len(batch), "reason": str(error)},
            )
            if self.metrics is not None:
                self.metrics.records_failed.inc(len(batch))
        waiters = []
        for p in batch:
            waiters.extend(p.commit.settle(error))
        _wake(waiters)
        if error is None:
            self._committed(batch, ids)
            self._quota([p.values for p in batch])

    def _insert(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` in one transaction on the writer's own connection (kept open:
        a pool checkout and an ORM session per group doubled the commit's CPU); their
        ids in order."""
        try:
            if self._conn is None:
                self._conn = self._db.engine.connect()
            result = self._conn.execute(_INSERT, rows)
            ids = [int(i) for i in result.scalars().all()]
            self._conn.commit()
            return ids
        except SQLAlchemyError as exc:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(SQLAlchemyError):
                    conn.close()
            raise StorageError(f"database error: {exc.__class__.__name__}: {exc}") from exc

    def _insert_once(self, rows: list[dict[str, Any]]) -> list[int]:
        """Insert ``rows`` on a pooled connection (a thread other than the writer's)."""
        try:
            with self._db.engine.begin() as conn:
                return [int(i) for i in conn.execute(_INSERT, rows).scalars().all()]
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc.__class__.__name__}: {exc}") from exc

    def _committed(self, batch: list[_Pending], ids: list[int]) -> None:
        hook = self.on_commit
        if hook is None:
            return
        done = [(i, p.event, p.values["outcome_event"]) for i, p in zip(ids, batch, strict=True)
                if p.event is not None]
        if done:
            try:
                hook(done)
            except Exception as exc:  # the events are in the outbox: the sweep finds them
                get_logger().error("outcome relay hook failed", extra={"reason": str(exc)})

    def _overflow(self, item: _Pending) -> None:
        if self.metrics is not None:
            self.metrics.records_overflow.inc()
        now = time.monotonic()
        if now - self._last_warning > 10.0:
            self._last_warning = now
            get_logger().warning(
                "attestation record queue full: writing in the request",
                extra={"queued": len(self._pending), "queued_bytes": self._pending_bytes},
            )
        self._write([item], own_connection=False)

    def _quota(self, written: list[dict[str, Any]]) -> None:
        """Account the evidence just written; run the quota checks that are due."""
        settings = self._settings
        per_client = max(1, settings.evidence_quota_per_client_bytes // QUOTA_CHECK_FRACTION)
        total = max(1, settings.evidence_quota_total_bytes // QUOTA_CHECK_FRACTION)
        due: list[str | None] = []
        with self._quota_lock:
            for v in written:
                size = v["evidence_bytes"]
                if not size:
                    continue
                client = v["client"]
                added = self._since_check.get(client, 0) + size
                if added >= per_client:
                    self._since_check.pop(client, None)
                    if client not in due:
                        due.append(client)
                else:
                    self._since_check[client] = added
                self._since_total_check += size
            if len(self._since_check) > MAX_QUEUED:  # bounded: forget the small ones
                self._since_check.clear()
            check_total = self._since_total_check >= total
            if check_total:
                self._since_total_check = 0
        if not due and not check_total:
            return
        try:
            enforce_evidence_quota(
                self._db, settings, due, check_total=check_total, metrics=self.metrics
            )
        except Exception as exc:  # the writer thread must outlive any one check
            get_logger().error("evidence quota check failed", extra={"reason": str(exc)})


def _drop_beyond(s: Any, where: Any, quota: int) -> tuple[int, int]:
    """Null the evidence of the oldest records matching ``where`` beyond ``quota`` bytes
    (newest kept first); returns (records, bytes) dropped."""
    rows = s.execute(
        select(_TABLE.c.id, _TABLE.c.evidence_bytes)
        .where(where, _TABLE.c.evidence_bytes.is_not(None))
        .order_by(_TABLE.c.id.desc())
    ).all()
    kept = 0
    drop: list[int] = []
    dropped_bytes = 0
    for row_id, size in rows:
        kept += int(size)
        if kept > quota:
            drop.append(int(row_id))
            dropped_bytes += int(size)
    for i in range(0, len(drop), BATCH):
        s.execute(
            update(_TABLE)
            .where(_TABLE.c.id.in_(drop[i : i + BATCH]))
            .values(evidence=None, evidence_expires_at=None, evidence_bytes=None)
        )
    return len(drop), dropped_bytes


def enforce_evidence_quota(
    db: Database,
    settings: Settings,
    clients: list[str | None],
    *,
    check_total: bool = True,
    metrics: Metrics | None = None,
) -> tuple[int, int]:
    """Drop the oldest evidence of each of ``clients`` beyond the per-client quota, and
    (``check_total``) the oldest of all beyond the total quota.

    Returns (records dropped for a client quota, records dropped for the total quota);
    both are counted in ``bootwatch_evidence_dropped_total`` when ``metrics`` is given.
    """
    by_client = by_total = 0
    with db.session() as s:
        for client in clients:
            where = _TABLE.c.client == client if client is not None else _TABLE.c.client.is_(None)
            n, size = _drop_beyond(s, where, settings.evidence_quota_per_client_bytes)
            by_client += n
            if n and metrics is not None:
                metrics.evidence_dropped.labels("client_quota").inc(n)
                metrics.evidence_dropped_bytes.labels("client_quota").inc(size)
        if check_total:
            kept = s.execute(
                select(func.coalesce(func.sum(_TABLE.c.evidence_bytes), 0)).where(
                    _TABLE.c.evidence_bytes.is_not(None)
                )
            ).scalar_one()
            if int(kept) > settings.evidence_quota_total_bytes:
                n, size = _drop_beyond(
                    s, _TABLE.c.evidence_expires_at.is_not(None),
                    settings.evidence_quota_total_bytes,
                )
                by_total += n
                if n and metrics is not None:
                    metrics.evidence_dropped.labels("total_quota").inc(n)
                    metrics.evidence_dropped_bytes.labels("total_quota").inc(size)
    if by_client or by_total:
        get_logger().info(
            "evidence quota: oldest evidence dropped",
            extra={"client_quota": by_client, "total_quota": by_total},
        )
    return by_client, by_total


def record_attestation(
    writer: RecordWriter, metrics: Metrics, record: AttestationRecord
) -> Commit:
    """Queue ``record`` and count its verdict; the caller awaits the returned
    :class:`Commit` before answering."""
    commit = writer.submit(record)
    metrics.verdict(record.provider, Verdict(record.verdict).value).inc()
    return commit


def purge_expired_evidence(db: Database, now: datetime | None = None) -> int:
    """Null out evidence whose retention ended; returns how many rows were purged."""
    now = now or utcnow()
    with db.session() as s:
        result = s.execute(
            update(AttestationRecordRow)
            .where(
                AttestationRecordRow.evidence_expires_at.is_not(None),
                AttestationRecordRow.evidence_expires_at <= now,
            )
            .values(evidence=None, evidence_expires_at=None, evidence_bytes=None)
        )
        return int(getattr(result, "rowcount", 0) or 0)
