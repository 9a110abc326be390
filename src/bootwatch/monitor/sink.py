"""The in-process outcome sink: the embedded server's service hands events here.

``publish`` puts the event on a bounded queue and returns at once; one thread
ingests the queue in batches (one transaction per batch), which is what lets
SQLite keep up with the attestation rate.  When the queue is full the caller
ingests synchronously instead (back-pressure, nothing dropped).  A normal
shutdown drains the queue.  What a kill -9 loses: the events still queued
(normally those of the last :data:`FLUSH_INTERVAL` seconds); docs/monitor.md.
"""

from __future__ import annotations

import queue
import threading
import time

from bootwatch.errors import BootwatchError
from bootwatch.monitor.core import Monitor
from bootwatch.protocol.outcome import OutcomeEvent
from bootwatch.service.logs import get_logger

__all__ = ["FLUSH_INTERVAL", "InProcessSink"]

FLUSH_INTERVAL = 0.05
BATCH = 500
MAX_QUEUED = 20_000


class InProcessSink:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._queue: queue.Queue[OutcomeEvent | None] = queue.Queue(MAX_QUEUED)
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bootwatch-ingest", daemon=True)
        self._thread.start()

    def publish(self, event: OutcomeEvent) -> None:
        self._idle.clear()
        try:
            self._queue.put(event, timeout=0.5)
        except queue.Full:
            self._ingest([event])

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every published event is ingested (tests, the demo, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.empty() and self._idle.is_set():
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _ingest(self, batch: list[OutcomeEvent]) -> None:
        for attempt in (1, 2):
            try:
                self.monitor.ingest_outcomes(batch)
                return
            except BootwatchError as exc:
                if attempt == 2:
                    get_logger().error("outcome events not ingested",
                                       extra={"reason": str(exc), "events": len(batch)})
                else:
                    time.sleep(0.5)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + FLUSH_INTERVAL
            while len(batch) < BATCH:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._ingest(batch)
            if self._queue.empty():
                self._idle.set()
        # drain what is left on shutdown
        rest: list[OutcomeEvent] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                rest.append(item)
        if rest:
            self._ingest(rest)
        self._idle.set()
