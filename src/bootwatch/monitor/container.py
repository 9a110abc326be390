"""Build the monitor in one visible place: ``bootstrap(settings)``.

Start-up steps are explicit, in this order: open the engine, run the
monitor's migrations, build the token verifier, the metrics, the
:class:`~bootwatch.monitor.core.Monitor`, the in-process sink, the webhook
dispatcher and the stale sweeper.  Nothing runs at import time; threads start
in :meth:`MonitorContainer.start` (called by the app's lifespan) and stop in
:meth:`MonitorContainer.stop`.  With ``--events nats://...`` the edge (CLI)
also attaches a JetStream ingester (``monitor/nats_ingest.py``), started and
stopped with the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, func, select

from bootwatch.errors import BootwatchError, ConfigError
from bootwatch.monitor.core import Monitor
from bootwatch.monitor.db import make_engine, run_migrations
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, VmRow
from bootwatch.monitor.releases.store import ReleaseStore
from bootwatch.monitor.reports import ReportWriter
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.sink import InProcessSink
from bootwatch.monitor.tokens import TokenVerifier
from bootwatch.monitor.webhooks import WebhookDispatcher
from bootwatch.protocol.health import FailedHop
from bootwatch.protocol.monitor import OPEN_STATUSES
from bootwatch.protocol.release import load_public_key
from bootwatch.service.logs import get_logger

__all__ = ["Ingester", "MonitorContainer", "bootstrap"]


class Ingester(Protocol):
    """A source of outcome events the monitor consumes (the JetStream ingester)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 30.0) -> None: ...


@dataclass
class MonitorContainer:
    settings: MonitorSettings
    engine: Engine
    monitor: Monitor
    metrics: MonitorMetrics
    sink: InProcessSink
    webhooks: WebhookDispatcher
    #: stores agents' health reports in group commits (the API's report handler)
    reports: ReportWriter
    #: False when the engine belongs to someone else (the embedded server's service)
    owns_engine: bool = True
    #: consumes outcome events from a broker (``--events nats://...``); None = none
    ingester: Ingester | None = None
    #: published agent releases (``--release-key``); None = releases are off.  One store
    #: for the API's release routes and the dashboard, so its lock is shared
    releases: ReleaseStore | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _sweeper: threading.Thread | None = None

    def start(self) -> None:
        self.reports.start()
        self.webhooks.start()
        if self.ingester is not None:
            self.ingester.start()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="bootwatch-sweep",
                                         daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()
        if self.ingester is not None:
            self.ingester.stop()
        self.reports.stop()
        self.webhooks.stop()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        if self.owns_engine:
            self.engine.dispose()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval):
            try:
                if self.monitor.sweep():
                    self.webhooks.kick()
            except BootwatchError as exc:
                get_logger().warning("stale sweep failed", extra={"reason": str(exc)})


def bootstrap(
    settings: MonitorSettings,
    *,
    egress_text: Callable[[FailedHop, str], str] | None = None,
    engine: Engine | None = None,
) -> MonitorContainer:
    """Open (and migrate) the database and build every part; threads not started."""
    owns = engine is None
    engine = engine or make_engine(settings.database_url, schema=settings.db_schema)
    run_migrations(engine)
    metrics = MonitorMetrics()
    tokens = (TokenVerifier(settings.trusted_issuers, ca=settings.issuer_ca)
              if settings.trusted_issuers else None)
    monitor = Monitor(engine, settings, metrics=metrics, tokens=tokens, egress_text=egress_text)

    def gauges() -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        with monitor.read() as session:
            states = {str(s): int(n) for s, n in session.execute(
                select(VmRow.state, func.count()).group_by(VmRow.state))}
            alerts = {(str(sev), str(r)): int(n) for sev, r, n in session.execute(
                select(AlertRow.severity, AlertRow.reason, func.count())
                .where(AlertRow.status.in_([s.value for s in OPEN_STATUSES]))
                .group_by(AlertRow.severity, AlertRow.reason))}
        return states, alerts

    metrics.attach_gauges(gauges)
    webhooks = WebhookDispatcher(monitor)
    return MonitorContainer(
        settings=settings, engine=engine, monitor=monitor, metrics=metrics,
        sink=InProcessSink(monitor, after=webhooks.kick), webhooks=webhooks,
        reports=ReportWriter(monitor), owns_engine=owns, releases=_release_store(settings),
    )


def _release_store(settings: MonitorSettings) -> ReleaseStore | None:
    """The release store over ``DATA/releases`` trusting the ``--release-key`` PEMs, or None
    when none is configured (the release routes are then off)."""
    if not settings.release_keys:
        return None
    keys = []
    for path in settings.release_keys:
        try:
            keys.append(load_public_key(Path(path).read_bytes(), path))
        except OSError as exc:
            raise ConfigError(f"--release-key {path}: {exc.strerror}") from None
    return ReleaseStore(Path(settings.data_dir) / "releases", tuple(keys))
