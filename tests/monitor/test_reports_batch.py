"""Health reports stored in group commits (Monitor.store_reports, monitor/reports.py) on
SQLite and PostgreSQL: a batch stores exactly what the same reports stored one at a time
do, only a verified report clears an agent_unresponsive alert, duplicates (stored before
or earlier in the batch) are acknowledged once; the writer answers every report of a
batch, with the transaction's error when it fails, and stores what waits before it stops.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from bootwatch.errors import StorageError
from bootwatch.monitor.core import CheckedReport, Monitor, ReportResult
from bootwatch.monitor.db import make_engine, run_migrations
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import AlertRow, VmRow
from bootwatch.monitor.reports import ReportWriter
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.health import FailedHop, HealthReport, HealthStatus
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _monitor(engine: Engine, clock: Clock) -> Monitor:
    # a webhook receiver configured (never contacted here: no dispatcher runs), so the
    # deliveries the alerts' transitions queue are compared too
    return Monitor(engine, MonitorSettings(stale_after_seconds=600,
                                           webhooks=("http://127.0.0.1:9/hook",),
                                           webhook_secret="s" * 32),
                   metrics=MonitorMetrics(), clock=clock)


def _stale_fleet(m: Monitor, clock: Clock, vms: list[str]) -> None:
    """Each VM attests at T0, then falls silent: the sweep 20 minutes later opens an
    agent_unresponsive alert for each."""
    for vm in vms:
        m.enable(vm)
    m.ingest_outcomes([OutcomeEvent(
        event_id=f"o-{i}", time=T0, provider="p", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h" * 43, vm_id=vm,
        pcrs={0: "00" * 32}, events=(), reset_count=1, secure_boot=True,
        claims=(("x-ms-azurevm-is-windows", False),)) for i, vm in enumerate(vms)])
    clock.now = T0 + timedelta(minutes=20)
    assert m.sweep() == len(vms)
    clock.now = T0 + timedelta(minutes=21)


def _reports(vms: list[str]) -> list[CheckedReport]:
    a, b, c = vms
    unknown = str(uuid.UUID(int=99)).upper()

    def rep(rid: str, vm: str, verified: bool, status: HealthStatus = HealthStatus.HEALTHY,
            **kw: Any) -> CheckedReport:
        r = HealthReport(rid, vm, status, T0, "1.2", boot_counter=3, **kw)
        return CheckedReport(r, vm, verified, "" if verified else "no token")

    return [
        rep("r1", a, True),                          # clears a's agent_unresponsive
        rep("r2", b, False),                         # unverified: b stays stale
        rep("r3", c, False, HealthStatus.PLATFORM_ERROR,
            platform_error_message="TLS handshake failed", failed_hop=FailedHop.TLS,
            failed_target="https://x:443"),          # alive, but an error
        rep("r4", unknown, False),                   # a VM never seen: recorded, not monitored
        rep("r1", a, True),                          # a duplicate inside the batch
        rep("r5", b, True),                          # b's next report verifies: cleared
    ]


def _dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    skip = {"monitor_alerts": {"id"}, "monitor_webhook_deliveries": {"id", "body"}}
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in ("monitor_vms", "monitor_reports", "monitor_alerts",
                      "monitor_recommendations", "monitor_webhook_deliveries"):
            cols = [r[0] for r in conn.execute(text(f"SELECT * FROM {table}")).cursor.description
                    if r[0] not in skip.get(table, set())]
            rows = conn.execute(text(f"SELECT {', '.join(cols)} FROM {table}")).all()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
    return out


def test_a_batch_of_reports_stores_what_they_store_one_at_a_time(
        engines: list[Engine]) -> None:
    vms = [str(uuid.UUID(int=i + 1)).upper() for i in range(3)]
    clocks = [Clock(), Clock()]
    batch, single = (_monitor(e, c) for e, c in zip(engines, clocks, strict=True))
    for m, clock in ((batch, clocks[0]), (single, clocks[1])):
        _stale_fleet(m, clock, vms)
    reports = _reports(vms)
    stored = [r.stored for r in batch.store_reports(reports)]
    one_by_one = [single.store_reports([r])[0].stored for r in reports]
    assert stored == one_by_one == [True, True, True, True, False, True]
    assert [r.stored for r in batch.store_reports(reports)] == [False] * len(reports)
    assert _dump(engines[0]) == _dump(engines[1])
    with engines[0].connect() as conn:
        states = dict(conn.execute(select(VmRow.vm_id, VmRow.state)).all())
        alerts = {a.vm_id: a.status for a in conn.execute(
            select(AlertRow.vm_id, AlertRow.status)
            .where(AlertRow.reason == "agent_unresponsive")).all()}
    a, b, c = vms
    assert alerts[a] == "resolved" and alerts[b] == "resolved"
    assert alerts[c] == "active"  # a platform error is alive, but clears nothing
    assert states[str(uuid.UUID(int=99)).upper()] == "not_monitored"
    # the alerts' opening and the two resolutions each queued a webhook delivery
    assert len(_dump(engines[0])["monitor_webhook_deliveries"]) >= 5


def test_an_unverified_report_never_clears_the_alert(engines: list[Engine]) -> None:
    clock = Clock()
    m = _monitor(engines[0], clock)
    vm = str(uuid.UUID(int=1)).upper()
    _stale_fleet(m, clock, [vm])
    unverified = CheckedReport(HealthReport("u1", vm, HealthStatus.HEALTHY, T0, "1.2"), vm,
                               False, "no token")
    assert m.store_reports([unverified])[0].stored
    with engines[0].connect() as conn:
        status = conn.execute(select(AlertRow.status)).scalar_one()
        state = conn.execute(select(VmRow.state)).scalar_one()
    assert status == "active" and state == "stale"


def test_the_writer_groups_concurrent_reports_and_answers_each(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    run_migrations(engine)
    clock = Clock()
    m = _monitor(engine, clock)
    vms = [str(uuid.UUID(int=i + 1)).upper() for i in range(40)]
    for vm in vms:
        m.enable(vm)
    writer = ReportWriter(m)
    writer.start()
    results: list[ReportResult] = []
    lock = threading.Lock()

    def agent(k: int) -> None:
        futs = [writer.submit(m.check_report(HealthReport(
            f"r-{k}-{i}", vms[(k * 50 + i) % 40], HealthStatus.PLATFORM_ERROR, T0, "1.2",
            platform_error_message="proxy refused"))) for i in range(50)]
        got = [f.result(timeout=60) for f in futs]
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=agent, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.stop()
    assert len(results) == 400 and all(r.stored and not r.verified for r in results)
    assert writer.stored == 400 and writer.batches < 400  # grouped, not one by one
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM monitor_reports")).scalar_one() == 400
    engine.dispose()


class _Failing:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def store_reports(self, reports: list[CheckedReport]) -> list[ReportResult]:
        self.calls.append(len(reports))
        raise StorageError("monitor database error: OperationalError: database is locked")


def test_a_failed_batch_answers_every_report_with_the_error() -> None:
    store = _Failing()
    writer = ReportWriter(store)
    reports = [CheckedReport(HealthReport(f"f{i}", "VM", HealthStatus.HEALTHY, T0, "1"), "VM",
                             False, "no token") for i in range(5)]
    futs = [writer.submit(r) for r in reports]  # the first one starts the thread
    for f in futs:
        with pytest.raises(StorageError, match="database is locked"):
            f.result(timeout=30)
    assert sum(store.calls) == 5
    writer.stop()
    refused = writer.submit(reports[0])
    with pytest.raises(StorageError, match="stopping"):
        refused.result(timeout=1)


def _hold_batches(m: Monitor) -> tuple[threading.Event, threading.Event]:
    """A slow database, in effect: each batch of ``m`` sets ``entered`` when its writing
    starts, then waits for ``gate``."""
    gate, entered = threading.Event(), threading.Event()
    real = m.store_reports

    def held(reports: Sequence[CheckedReport]) -> list[ReportResult]:
        entered.set()
        gate.wait(10)
        return real(reports)

    m.store_reports = held  # type: ignore[method-assign]
    return gate, entered


def test_stop_stores_what_is_waiting(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    run_migrations(engine)
    m = _monitor(engine, Clock())
    gate, entered = _hold_batches(m)  # the first batch waits until everything is queued
    writer = ReportWriter(m)
    futs = [writer.submit(CheckedReport(HealthReport(f"s{i}", "VM-S", HealthStatus.HEALTHY,
                                                     T0, "1"), "VM-S", False, "no token"))
            for i in range(30)]
    assert entered.wait(10)  # the first batch is being written ...
    stopper = threading.Thread(target=writer.stop)
    stopper.start()  # ... when stop is called
    time.sleep(0.2)
    gate.set()
    stopper.join(30)
    assert all(f.result(timeout=1).stored for f in futs)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM monitor_reports")).scalar_one() == 30
    engine.dispose()


def test_a_cancelled_request_neither_stops_the_writer_nor_loses_its_report(
        tmp_path: Path) -> None:
    """A request that goes away cancels its future (asyncio.wrap_future does): the writer
    still stores that report and goes on answering the others (setting a cancelled
    future's result used to kill its thread, and every later report waited forever)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    run_migrations(engine)
    m = _monitor(engine, Clock())
    gate, entered = _hold_batches(m)

    def rep(rid: str) -> CheckedReport:
        return CheckedReport(HealthReport(rid, "VM-C", HealthStatus.HEALTHY, T0, "1"), "VM-C",
                             False, "no token")

    writer = ReportWriter(m)
    first = writer.submit(rep("c1"))  # taken at once, held at the gate
    assert entered.wait(10)
    gone = writer.submit(rep("c2"))  # waits for the next batch ...
    assert gone.cancel()  # ... and its request goes away
    gate.set()
    assert first.result(timeout=30).stored
    assert writer.submit(rep("c3")).result(timeout=30).stored  # still answering
    writer.stop()
    with engine.connect() as conn:
        kept = set(conn.execute(text("SELECT report_id FROM monitor_reports")).scalars())
    assert kept == {"c1", "c2", "c3"}
    engine.dispose()
