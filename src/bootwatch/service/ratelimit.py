"""Per-client rate limiting: an in-memory token bucket per client address.

Each worker process keeps its own buckets, so with N workers a client may get
up to N times the configured rate in the worst case (connections are spread
over workers by the kernel).  Over the limit the service answers 429 with a
``Retry-After`` header (whole seconds until a token is available).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

__all__ = [
    "MAX_CLIENTS",
    "TokenBuckets",
    "retry_after_header",
]

MAX_CLIENTS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, client: str, now: float | None = None) -> float:
        """Take one token; returns 0.0 if allowed, else seconds until one is available."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= MAX_CLIENTS:
                    self._evict(now)
                bucket = _Bucket(float(self.burst), now)
                self._buckets[client] = bucket
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= MAX_CLIENTS:
            self._buckets.clear()


def retry_after_header(wait: float) -> str:
    return str(max(1, math.ceil(wait)))
