"""Where the service sends each attestation's outcome event: the event sink.

:class:`EventSink` is the interface; the service holds at most one, chosen by
settings at the edge (the embedded server passes the monitor's in-process
sink; ``--monitor-url`` builds :class:`HttpEventSink`; a later broker sink
plugs in the same way).  ``publish`` must never block an attestation for long
and never fail it: the verdict is already decided when the event is made.

:class:`HttpEventSink` posts batches to ``<monitor>/api/v1/outcomes`` with the
monitor admin token (``BOOTWATCH_MONITOR_TOKEN``) from one background thread,
retrying with backoff while the monitor is away.  Its queue is in memory and
bounded (oldest dropped first when full, counted in the log): durable
delivery is the broker sink's job (docs/monitor.md says what can be lost).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Protocol

import httpx

from bootwatch.protocol.outcome import OutcomeEvent, outcome_to_json
from bootwatch.service.logs import get_logger
from bootwatch.tlsverify import tls_verify

__all__ = ["EventSink", "HttpEventSink"]


class EventSink(Protocol):
    """Receives one outcome event per answered attestation."""

    def publish(self, event: OutcomeEvent) -> None: ...


class HttpEventSink:
    MAX_QUEUED = 50_000
    BATCH = 500

    def __init__(self, monitor_url: str, *, token: str, ca: str = "",
                 timeout: float = 10.0) -> None:
        self.url = monitor_url.rstrip("/") + "/api/v1/outcomes"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(timeout=timeout, verify=tls_verify(ca))
        self._queue: collections.deque[OutcomeEvent] = collections.deque()
        self._lock = threading.Condition()
        self._stop = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="bootwatch-events-http",
                                        daemon=True)
        self._thread.start()

    def publish(self, event: OutcomeEvent) -> None:
        with self._lock:
            if len(self._queue) >= self.MAX_QUEUED:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(event)
            self._lock.notify()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def close(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join(timeout=5)
        self._client.close()

    def _run(self) -> None:
        delay = 0.5
        while True:
            with self._lock:
                while not self._queue and not self._stop:
                    self._lock.wait()
                if self._stop and not self._queue:
                    return
                batch = [self._queue[i] for i in range(min(self.BATCH, len(self._queue)))]
            try:
                resp = self._client.post(
                    self.url, json={"events": [outcome_to_json(e) for e in batch]},
                    headers=self._headers)
                ok = resp.status_code == 202
                if not ok and 400 <= resp.status_code < 500 and resp.status_code != 429:
                    get_logger().error("monitor refused outcome events",
                                       extra={"status": resp.status_code,
                                              "reason": resp.text[:500]})
                    ok = True  # a refusal will not change on retry: drop the batch
            except httpx.HTTPError as exc:
                ok = False
                get_logger().warning("monitor unreachable", extra={"reason": str(exc)})
            if ok:
                with self._lock:
                    for _ in batch:
                        if self._queue:
                            self._queue.popleft()
                delay = 0.5
            else:
                if self._stop:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
