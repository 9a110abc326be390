"""Prometheus metrics at ``/metrics``.

Per app a private registry holds: ``bootwatch_http_requests_total`` (method,
route, status), ``bootwatch_http_request_duration_seconds`` (histogram, route),
``bootwatch_attestation_verdicts_total`` (provider, verdict), and the record
writer's ``bootwatch_attestation_records_overflow_total`` (written in the
request because the queue was full) and ``..._records_failed_total`` (not
stored), and ``bootwatch_evidence_dropped_total`` / ``..._bytes_total`` (reason:
``client_quota`` or ``total_quota``; evidence dropped, oldest first, to stay
within the evidence quota).  Labelled children are cached: ``labels()`` costs a lock and a tuple
per call, and every request touches three of them.  With several
workers the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start and
``/metrics`` then aggregates every worker through prometheus-client's
multiprocess collector; without it each worker reports its own numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_mp

__all__ = [
    "LATENCY_BUCKETS",
    "MAX_CACHED_CHILDREN",
    "Metrics",
]

MAX_CACHED_CHILDREN = 4096
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    verdicts: Counter
    records_overflow: Counter
    records_failed: Counter
    evidence_dropped: Counter
    evidence_dropped_bytes: Counter
    _children: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    #: expositions appended to the service's (the embedded monitor's registry)
    extra: tuple[Callable[[], bytes], ...] = ()

    @classmethod
    def create(cls, *, extra: tuple[Callable[[], bytes], ...] = ()) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            extra=extra,
            requests=Counter(
                "bootwatch_http_requests",
                "HTTP requests served",
                ("method", "route", "status"),
                registry=registry,
            ),
            latency=Histogram(
                "bootwatch_http_request_duration_seconds",
                "HTTP request latency",
                ("route",),
                buckets=LATENCY_BUCKETS,
                registry=registry,
            ),
            verdicts=Counter(
                "bootwatch_attestation_verdicts",
                "Attestation verdicts",
                ("provider", "verdict"),
                registry=registry,
            ),
            records_overflow=Counter(
                "bootwatch_attestation_records_overflow",
                "Attestation records written in the request (writer queue full)",
                registry=registry,
            ),
            records_failed=Counter(
                "bootwatch_attestation_records_failed",
                "Attestation records the database did not store",
                registry=registry,
            ),
            evidence_dropped=Counter(
                "bootwatch_evidence_dropped",
                "Records whose kept evidence was dropped, oldest first, to stay within "
                "the evidence quota (reason: client_quota or total_quota)",
                ("reason",),
                registry=registry,
            ),
            evidence_dropped_bytes=Counter(
                "bootwatch_evidence_dropped_bytes",
                "Evidence bytes dropped to stay within the evidence quota",
                ("reason",),
                registry=registry,
            ),
        )

    def _remember(self, key: tuple[Any, ...], child: Any) -> Any:
        if len(self._children) < MAX_CACHED_CHILDREN:  # label values are bounded, but be sure
            self._children[key] = child
        return child

    def request(self, method: str, route: str, status: int) -> Counter:
        """The requests counter child for these labels (cached)."""
        key = ("r", method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._remember(key, self.requests.labels(method, route, str(status)))
        return child  # type: ignore[no-any-return]

    def latency_of(self, route: str) -> Histogram:
        """The latency histogram child for ``route`` (cached)."""
        key = ("l", route)
        child = self._children.get(key)
        if child is None:
            child = self._remember(key, self.latency.labels(route))
        return child  # type: ignore[no-any-return]

    def verdict(self, provider: str, verdict: str) -> Counter:
        """The verdicts counter child for these labels (cached)."""
        key = ("v", provider, verdict)
        child = self._children.get(key)
        if child is None:
            child = self._remember(key, self.verdicts.labels(provider, verdict))
        return child  # type: ignore[no-any-return]

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prom_mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry) + self._extra(), CONTENT_TYPE_LATEST
        return generate_latest(self.registry) + self._extra(), CONTENT_TYPE_LATEST

    def _extra(self) -> bytes:
        return b"".join(render() for render in self.extra)
