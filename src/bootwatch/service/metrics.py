"""Prometheus metrics at ``/metrics``.

Per app a private registry holds: ``bootwatch_http_requests_total`` (method,
route, status), ``bootwatch_http_request_duration_seconds`` (histogram, route),
``bootwatch_attestation_verdicts_total`` (provider, verdict).  With several
workers the CLI sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers start and
``/metrics`` then aggregates every worker through prometheus-client's
multiprocess collector; without it each worker reports its own numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_mp

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    verdicts: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
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
        )

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prom_mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
