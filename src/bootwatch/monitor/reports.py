"""Group commit of agent health reports: concurrent reports share one transaction.

Why: every agent sends a health report per cycle, as often as it attests, and a
report stored alone costs a transaction that reads its VM and what the VM's
state depends on, then commits (about 2 ms of CPU on this project's machine,
ten times an outcome event in a batch).  The API's report handler checks the
token in its own thread, hands the checked report to the :class:`ReportWriter`
and waits for its result; the writer's thread stores whatever reports are
waiting, up to :data:`MAX_BATCH`, in one transaction
(:meth:`~bootwatch.monitor.core.Monitor.store_reports`), then answers each.
Under light load a batch is one report (no waiting for company: the answer is
never delayed to fill a batch); under heavy load the batches grow by
themselves while the previous one commits.

An answer means the report is committed (a kill -9 after it loses nothing).
When the transaction fails, every report of the batch gets the error (the API
answers 503; the agent sends its report again next cycle).
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future
from typing import Final, Protocol

from bootwatch.errors import StorageError
from bootwatch.monitor.core import CheckedReport, ReportResult
from bootwatch.service.logs import get_logger

__all__ = ["MAX_BATCH", "ReportWriter", "StoresReports"]

#: reports per transaction at most
MAX_BATCH: Final = 500
#: reports waiting at most; beyond, submit refuses (the API answers 503)
MAX_WAITING: Final = 20_000


class StoresReports(Protocol):
    def store_reports(self, reports: list[CheckedReport]) -> list[ReportResult]: ...


class ReportWriter:
    """One thread storing checked reports in batches (module docstring)."""

    def __init__(self, monitor: StoresReports, *, max_batch: int = MAX_BATCH,
                 max_waiting: int = MAX_WAITING) -> None:
        self._monitor = monitor
        self._max_batch = max_batch
        self._max_waiting = max_waiting
        self._cond = threading.Condition()
        self._waiting: collections.deque[tuple[CheckedReport, Future[ReportResult]]] = (
            collections.deque())
        self._stop = False
        self._thread: threading.Thread | None = None
        #: batches stored so far and the reports in them (tests, benchmarks)
        self.batches = 0
        self.stored = 0

    def start(self) -> None:
        with self._cond:
            self._stop = False
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bootwatch-reports",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is waiting, then stop the thread."""
        with self._cond:
            thread, self._stop = self._thread, True
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            if thread is None or not thread.is_alive():
                self._thread = None  # else it is still storing: a start() must not add one
            left = list(self._waiting)
            self._waiting.clear()
        for _, fut in left:  # only when the thread could not finish in time
            if not fut.done():
                fut.set_exception(StorageError("the monitor is stopping; send the report "
                                               "again"))

    def submit(self, report: CheckedReport) -> Future[ReportResult]:
        """Queue ``report``; the future resolves once it is committed (or fails with the
        transaction's :class:`~bootwatch.errors.StorageError`)."""
        fut: Future[ReportResult] = Future()
        with self._cond:
            if self._stop:
                fut.set_exception(StorageError("the monitor is stopping; send the report "
                                               "again"))
                return fut
            self._start_locked()  # started by its first report when not started before
            if len(self._waiting) >= self._max_waiting:
                fut.set_exception(StorageError(
                    f"{len(self._waiting)} reports are waiting to be stored: the monitor's "
                    "database is behind; send the report again later"))
                return fut
            self._waiting.append((report, fut))
            self._cond.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stop:
                    self._cond.wait()
                if not self._waiting:
                    return  # stopping, and nothing is left
                n = min(self._max_batch, len(self._waiting))
                taken = [self._waiting.popleft() for _ in range(n)]
            # a report whose request went away (its future cancelled) is still stored: the
            # agent may not have seen the answer, and storing it twice is idempotent anyway
            batch = [(r, fut if fut.set_running_or_notify_cancel() else None)
                     for r, fut in taken]
            try:
                results = self._monitor.store_reports([r for r, _ in batch])
            except Exception as exc:  # every report of the batch gets the error
                if not isinstance(exc, StorageError):
                    get_logger().error("report batch failed", extra={
                        "reports": len(batch), "reason": f"{exc.__class__.__name__}: {exc}"})
                for _, fut in batch:
                    if fut is not None:
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.stored += len(batch)
            for (_, fut), result in zip(batch, results, strict=True):
                if fut is not None:
                    fut.set_result(result)
