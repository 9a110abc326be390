"""The monitor's Prometheus metrics, in a registry the monitor owns.

Counters count what happened (outcomes, reports, alerts, webhook deliveries);
the gauges (VMs by state, open alerts by severity and reason) are read from
the database at scrape time by a collector, so they are right after a restart
and across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bootwatch.protocol.monitor import AlertReason, Severity, VmState

__all__ = ["MonitorMetrics"]


class _Gauges(Collector):
    def __init__(self, read: Callable[[], tuple[dict[str, int], dict[tuple[str, str], int]]]):
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states, alerts = self._read()
        # every known state and (severity, reason) is exposed, 0 when the database has
        # none: a series left out when its last VM or alert went away (a VM disabled, an
        # alert resolved) read as "no data" instead of 0 in Prometheus, and scrapers that
        # keep a gauge's last value went on showing the old count
        states = {s.value: 0 for s in VmState} | states
        alerts = {(sev.value, r.value): 0 for sev in Severity for r in AlertReason} | alerts
        g = GaugeMetricFamily("bootwatch_monitor_vms", "VMs by state", labels=["state"])
        for state, n in sorted(states.items()):
            g.add_metric([state], n)
        yield g
        a = GaugeMetricFamily("bootwatch_monitor_open_alerts", "open alerts",
                              labels=["severity", "reason"])
        for (sev, reason), n in sorted(alerts.items()):
            a.add_metric([sev, reason], n)
        yield a


class MonitorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._outcomes = Counter("bootwatch_monitor_outcomes_total", "outcome events ingested",
                                 ["verdict", "duplicate"], registry=self.registry)
        self._reports = Counter("bootwatch_monitor_reports_total", "health reports ingested",
                                ["status", "verified", "duplicate"], registry=self.registry)
        self._alerts = Counter("bootwatch_monitor_alerts_opened_total", "alerts opened",
                               ["reason", "severity"], registry=self.registry)
        self._suppressed = Counter("bootwatch_monitor_alerts_suppressed_total",
                                   "alerts not opened because a suppression rule matched",
                                   ["reason"], registry=self.registry)
        self._foreign = Counter("bootwatch_monitor_outcomes_foreign_provider_total",
                                "outcome events of a VM from a provider it is not bound to "
                                "(kept as history, never applied)", ["provider"],
                                registry=self.registry)
        self._webhooks = Counter("bootwatch_monitor_webhook_deliveries_total",
                                 "webhook delivery attempts", ["result"], registry=self.registry)

    def attach_gauges(
        self, read: Callable[[], tuple[dict[str, int], dict[tuple[str, str], int]]]
    ) -> None:
        self.registry.register(_Gauges(read))

    def outcome(self, verdict: str, *, duplicate: bool) -> None:
        self._outcomes.labels(verdict, str(duplicate).lower()).inc()

    def foreign_outcome(self, provider: str) -> None:
        self._foreign.labels(provider).inc()

    def report(self, status: str, verified: bool, *, duplicate: bool) -> None:
        self._reports.labels(status, str(verified).lower(), str(duplicate).lower()).inc()

    def alert_opened(self, reason: str, severity: str) -> None:
        self._alerts.labels(reason, severity).inc()

    def suppressed(self, reason: str) -> None:
        self._suppressed.labels(reason).inc()

    def webhook(self, result: str) -> None:
        self._webhooks.labels(result).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
