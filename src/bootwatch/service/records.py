"""Attestation records: one row per attestation request.

Public API (stable names) for the attestation handlers:

* :class:`AttestationRecord` -- what to store: ``provider``, ``attestation_type``,
  ``verdict`` (:class:`Verdict`: permit/deny/error), ``reason``, ``vm_id``,
  ``policy_hash``, ``evidence`` (raw request bytes; the handler passes it only for
  requests that parsed as evidence; kept for ``Settings.evidence_retention_seconds``
  and within the evidence quota), ``client`` (the address it came from).
* :func:`record_attestation` ``(request, record)`` -- hand it to the worker's
  :class:`RecordWriter` (never blocks on the database unless the writer's queue
  is full) and count the verdict in the ``bootwatch_attestation_verdicts_total``
  metric.
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

Why a writer thread: an insert and its commit cost a worker ~0.5 ms of its
event loop per attestation, about a sixth of the whole request.  The writer
takes records from a bounded in-memory queue and inserts them in batches (one
``executemany`` and one commit per batch) on its own thread, where the
database driver releases the GIL while it waits.  The record keeps the time
of the request, not of the insert.

What can be lost: records accepted but not yet written when the process dies
without shutting down (SIGKILL, OOM, power): normally those of the last
:data:`FLUSH_INTERVAL` seconds, at most the queue bound.  A normal shutdown
(SIGTERM/SIGINT, end of the app's lifespan) writes everything first.  When the
queue is full (the database is slower than the traffic) a record is written
synchronously in the request instead, counted in
``bootwatch_attestation_records_overflow_total``: nothing is dropped, the
worker slows down.  A batch the database refuses twice is logged and counted
in ``bootwatch_attestation_records_failed_total`` (the verdicts were already
answered; a lost record never turns a verdict into a 500).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, func, insert, select, update
from starlette.requests import Request

from bootwatch.errors import StorageError
from bootwatch.service.db import utcnow
from bootwatch.service.logs import get_logger
from bootwatch.service.models import AttestationRecordRow

if TYPE_CHECKING:
    from bootwatch.service.metrics import Metrics
    from bootwatch.service.settings import Settings
    from bootwatch.service.state import ServiceState

MAX_REASON = 4000
#: most records waiting for the writer (beyond: written synchronously)
MAX_QUEUED = 10_000
#: most evidence bytes waiting for the writer (evidence is ~125 KB per request)
MAX_QUEUED_BYTES = 64 * 1024 * 1024
#: seconds the writer lets records accumulate before a batch
FLUSH_INTERVAL = 0.05
#: records per insert statement
BATCH = 500
#: seconds between the two attempts at a batch
RETRY_DELAY = 1.0

_TABLE = cast(Table, AttestationRecordRow.__table__)  # Core statements: no ORM unit of work


class Verdict(StrEnum):
    PERMIT = "permit"
    DENY = "deny"
    ERROR = "error"


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
    }


def store_record(
    state: ServiceState, record: AttestationRecord, now: datetime | None = None
) -> int:
    """Insert one record now; evidence is dropped when retention is 0. Returns the row id."""
    values = _row(record, now or utcnow(), state.settings)
    with state.db.session() as s:
        result = s.execute(insert(_TABLE).values(**values).returning(_TABLE.c.id))
        return int(result.scalar_one())


class RecordWriter:
    """Writes attestation records in batches on a background thread (see the module doc).

    Started on the first :meth:`submit`; :meth:`flush` waits until everything
    submitted so far is stored (tests, shutdown); :meth:`close` flushes and
    stops the thread.  ``metrics``, when set, counts overflows and failures.
    """

    def __init__(
        self,
        state: ServiceState,
        *,
        max_queued: int = MAX_QUEUED,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        interval: float = FLUSH_INTERVAL,
    ) -> None:
        self._state = state
        self._max_queued = max_queued
        self._max_bytes = max_queued_bytes
        self._interval = interval
        self._cond = threading.Condition()
        self._pending: deque[dict[str, Any]] = deque()
        self._pending_bytes = 0
        self._submitted = 0
        self._done = 0  # written or given up on
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._last_warning = 0.0
        self.metrics: Metrics | None = None
        #: evidence bytes written since the last quota check, per client and in total
        self._quota_lock = threading.Lock()
        self._since_check: dict[str | None, int] = {}
        self._since_total_check = 0

    def submit(self, record: AttestationRecord) -> None:
        """Queue ``record`` (stamped now); written synchronously when the queue is full."""
        values = _row(record, utcnow(), self._state.settings)
        size = len(values["evidence"] or b"")
        with self._cond:
            full = (
                len(self._pending) >= self._max_queued
                or self._pending_bytes + size > self._max_bytes
                or self._stopping
            )
            if not full:
                self._ensure_thread()
                self._pending.append(values)
                self._pending_bytes += size
                self._submitted += 1
                if len(self._pending) == 1 or len(self._pending) >= BATCH:
                    self._cond.notify_all()
                return
        self._overflow(values)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every record submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            self._cond.notify_all()  # cut the accumulation wait short
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
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._stopping and len(self._pending) < BATCH:
                    self._cond.wait(self._interval)  # let a batch accumulate
                if not self._pending and self._stopping:
                    return
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                self._pending_bytes -= sum(len(v["evidence"] or b"") for v in batch)
            self._write(batch)
            self._quota(batch)
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for attempt in (1, 2):
            try:
                with self._state.db.session() as s:
                    s.execute(insert(_TABLE), batch)
                return
            except Exception as exc:  # the writer thread must outlive any one batch
                if attempt == 1 and isinstance(exc, StorageError):
                    time.sleep(RETRY_DELAY)
                    continue
                get_logger().error(
                    "attestation records not stored",
                    extra={"records": len(batch), "reason": str(exc)},
                )
                if self.metrics is not None:
                    self.metrics.records_failed.inc(len(batch))

    def _overflow(self, values: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.records_overflow.inc()
        now = time.monotonic()
        if now - self._last_warning > 10.0:
            self._last_warning = now
            get_logger().warning(
                "attestation record queue full: writing in the request",
                extra={"queued": len(self._pending), "queued_bytes": self._pending_bytes},
            )
        with self._state.db.session() as s:
            s.execute(insert(_TABLE).values(**values))
        self._quota([values])

    def _quota(self, written: list[dict[str, Any]]) -> None:
        """Account the evidence just written; run the quota checks that are due."""
        settings = self._state.settings
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
                self._state, due, check_total=check_total, metrics=self.metrics
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
    state: ServiceState,
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
    settings = state.settings
    by_client = by_total = 0
    with state.db.session() as s:
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


def record_attestation(request: Request, record: AttestationRecord) -> None:
    """Queue ``record`` for the app serving ``request`` and count its verdict."""
    state: ServiceState = request.app.state.bw
    state.records.submit(record)
    metrics = getattr(request.app.state, "bw_metrics", None)
    if metrics is not None:
        metrics.verdict(record.provider, Verdict(record.verdict).value).inc()


def purge_expired_evidence(state: ServiceState, now: datetime | None = None) -> int:
    """Null out evidence whose retention ended; returns how many rows were purged."""
    now = now or utcnow()
    with state.db.session() as s:
        result = s.execute(
            update(AttestationRecordRow)
            .where(
                AttestationRecordRow.evidence_expires_at.is_not(None),
                AttestationRecordRow.evidence_expires_at <= now,
            )
            .values(evidence=None, evidence_expires_at=None, evidence_bytes=None)
        )
        return int(getattr(result, "rowcount", 0) or 0)
