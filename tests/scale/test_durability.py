"""Acknowledged means durable (issue 15, items 3 and 5): real ``bootwatch`` processes
under attestation load from a real swtpm VM's request, killed with SIGKILL mid-load and
restarted; then every acknowledged attestation (a 200 with a token, or a 400 verdict)
must have its record, and every record's outcome event must reach the monitor.

Matching, not only counting: every answer names its record (``x-bootwatch-request-id``,
also the outcome event's id), so each acknowledged answer is looked up by its id among
the records and among the monitor's outcomes.  Records of requests whose answer the kill
cut off are the surplus; ``monitor outcomes == records`` with an empty outbox is "every
recorded event was delivered, once".
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from bwproc import Load, Proc, free_port, private_postgres, until
from bwservers import PG_URL, pg_schema
from sqlalchemy import create_engine, text

from bootwatch.protocol.health import HealthReport, HealthStatus, encode_health_report

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]

TOKEN = "durability-admin-token-0123456789abcdef"


@pytest.fixture
def schemas() -> Iterator[Callable[[], str]]:
    """Fresh PostgreSQL schemas on demand (bwservers.pg_schema), dropped afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(pg_schema())


class Counts:
    """Row counts read straight from the database (a separate connection)."""

    def __init__(self, url: str, *, service_schema: str = "", monitor_schema: str = "") -> None:
        self.engine = create_engine(url)
        self.records = f'"{service_schema}".attestation_records' if service_schema \
            else "attestation_records"
        self.outcomes = f'"{monitor_schema}".monitor_outcomes' if monitor_schema \
            else "monitor_outcomes"

    def _one(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())

    def record_count(self) -> int:
        return self._one(f"SELECT count(*) FROM {self.records}")

    def _ids(self, sql: str) -> set[str]:
        with self.engine.connect() as conn:
            return {str(v) for v in conn.execute(text(sql)).scalars()}

    def unrecorded(self, acknowledged: set[str]) -> set[str]:
        """Acknowledged request ids with no record."""
        return acknowledged - self._ids(f"SELECT request_id FROM {self.records}")

    def unseen_by_monitor(self, acknowledged: set[str]) -> set[str]:
        """Acknowledged request ids whose outcome event the monitor does not hold."""
        return acknowledged - self._ids(f"SELECT event_id FROM {self.outcomes}")

    def undelivered(self) -> int:
        return self._one(f"SELECT count(*) FROM {self.records} WHERE outcome_event IS NOT NULL")

    def outcome_count(self) -> int:
        return self._one(f"SELECT count(*) FROM {self.outcomes}")

    def settled(self) -> bool:
        return self.undelivered() == 0 and self.outcome_count() == self.record_count()


def _server_args(port: int, anchors: Path, *extra: str) -> list[str]:
    return ["server", "--insecure-http", "--port", str(port), "--trust-anchors", str(anchors),
            "--rate-limit", "0", "--events-orphan-after", "1", *extra]


def _env(tmp: Path) -> dict[str, str]:
    tokens = tmp / "tokens"
    tokens.write_text(TOKEN + "\n")
    return {"BOOTWATCH_ADMIN_TOKENS": TOKEN, "BOOTWATCH_MONITOR_TOKEN": TOKEN,
            "XDG_DATA_HOME": str(tmp / "xdg")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill9_of_the_embedded_server_loses_no_acknowledged_attestation(
    backend: str, request_body: tuple[bytes, Path], tmp_path: Path, schemas: Callable[[], str],
) -> None:
    body, anchors = request_body
    port = free_port()
    if backend == "sqlite":
        db = ["--data-dir", str(tmp_path / "data")]
        counts = Counts(f"sqlite:///{tmp_path / 'data' / 'bootwatch.db'}")
    else:
        schema = schemas()
        db = ["--data-dir", str(tmp_path / "data"), "--db", PG_URL, "--db-schema", schema]
        counts = Counts(PG_URL, service_schema=schema, monitor_schema=schema)
    server = Proc(_server_args(port, anchors, *db), port=port, log=tmp_path / "server.log",
                  env=_env(tmp_path))
    server.start()
    try:
        load = Load(f"http://127.0.0.1:{port}", body).start()
        load.wait_answered(120)
        server.kill9()  # mid-load: requests in flight, records and events being written
        result = load.stop()
        assert result.answered > 0 and result.other == {}, result
        server.start()
        until(counts.settled, 60, "the restarted server to deliver what the dead one left")
    finally:
        server.stop()
    assert len(result.ids) == result.acknowledged
    assert counts.unrecorded(result.ids) == set(), result
    assert counts.unseen_by_monitor(result.ids) == set(), result
    assert counts.outcome_count() == counts.record_count()


def test_kill9_of_monitor_and_service_replicas_behind_http_events(
    request_body: tuple[bytes, Path], tmp_path: Path, schemas: Callable[[], str],
) -> None:
    """Two processes on PostgreSQL: ``service run --workers 2 --events http://monitor`` and
    ``monitor run``.  The monitor is killed mid-load (the service keeps answering; its
    events wait in the outbox), restarted; then the service is killed (events held in
    its memory are lost with it, not from the outbox) and restarted."""
    body, anchors = request_body
    service_schema, monitor_schema = schemas(), schemas()
    counts = Counts(PG_URL, service_schema=service_schema, monitor_schema=monitor_schema)
    env = _env(tmp_path)
    mport, sport = free_port(), free_port()
    monitor = Proc(["monitor", "run", "--insecure-http", "--port", str(mport), "--db", PG_URL,
                    "--db-schema", monitor_schema, "--data-dir", str(tmp_path / "m")],
                   port=mport, log=tmp_path / "monitor.log", env=env)
    service = Proc(["service", "run", "--insecure-http", "--port", str(sport), "--workers", "2",
                    "--db", PG_URL, "--db-schema", service_schema, "--data-dir",
                    str(tmp_path / "s"), "--trust-anchors", str(anchors), "--rate-limit", "0",
                    "--events", f"http://127.0.0.1:{mport}", "--events-orphan-after", "1"],
                   port=sport, log=tmp_path / "service.log", env=env)
    monitor.start()
    service.start()
    try:
        load = Load(f"http://127.0.0.1:{sport}", body).start()
        load.wait_answered(80)
        monitor.kill9()
        mark = load.result.acknowledged
        load.wait_answered(mark + 80)  # answered while the monitor is dead
        assert counts.undelivered() > 0, "events of the monitor's downtime wait in the outbox"
        monitor.start()
        load.wait_answered(load.result.acknowledged + 80)
        service.kill9()
        result = load.stop()
        service.start()
        until(counts.settled, 90, "every recorded event to reach the monitor")
    finally:
        service.stop()
        monitor.stop()
    assert result.other == {}, result
    assert len(result.ids) == result.acknowledged
    assert counts.unrecorded(result.ids) == set(), result
    assert counts.unseen_by_monitor(result.ids) == set(), result
    assert counts.outcome_count() == counts.record_count()


def test_database_restart_mid_load_answers_503_then_recovers(
    request_body: tuple[bytes, Path], tmp_path: Path,
) -> None:
    """A private PostgreSQL cluster stopped under load: the service answers 503 with
    Retry-After (never a 200 it cannot record) and recovers by itself when it is back."""
    body, anchors = request_body
    with private_postgres() as pg:
        port = free_port()
        service = Proc(["service", "run", "--insecure-http", "--port", str(port), "--db", pg.url,
                        "--data-dir", str(tmp_path / "s"), "--trust-anchors", str(anchors),
                        "--rate-limit", "0"],
                       port=port, log=tmp_path / "service.log", env=_env(tmp_path))
        service.start()
        counts = Counts(pg.url)
        try:
            load = Load(f"http://127.0.0.1:{port}", body, threads=4).start()
            load.wait_answered(60)
            pg.stop(mode="fast")
            until(lambda: load.result.unavailable >= 20, 60, "503 answers while PG is down")
            acknowledged_while_down = load.result.acknowledged
            pg.start()
            load.wait_answered(acknowledged_while_down + 60, timeout=120)  # recovered alone
            result = load.stop()
        finally:
            service.stop()
        assert result.unavailable_without_retry_after == 0, result
        assert result.other == {}, (result, service.output())
        assert len(result.ids) == result.acknowledged
        assert counts.unrecorded(result.ids) == set(), result
        counts.engine.dispose()



class _ReportLoad:
    """``threads`` agents posting platform-error reports (one id each) to a monitor until
    stopped; keeps the id of every report answered 202 with ``stored``."""

    def __init__(self, url: str, *, threads: int = 8) -> None:
        self.url = url.rstrip("/") + "/api/v1/reports"
        self.threads = threads
        self.stored: set[str] = set()
        self.failed = 0
        #: 503 answers, and those of them without a Retry-After header
        self.unavailable = 0
        self.unavailable_without_retry_after = 0
        self.other: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _run(self, k: int) -> None:
        vm = str(uuid.UUID(int=k + 1)).upper()
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                report = HealthReport(uuid.uuid4().hex, vm, HealthStatus.PLATFORM_ERROR,
                                      datetime.now(UTC), "1.0",
                                      platform_error_message="proxy refused the CONNECT")
                try:
                    r = client.post(self.url, content=encode_health_report(report),
                                    headers={"content-type": "application/json"})
                except httpx.HTTPError:
                    with self._lock:
                        self.failed += 1
                    time.sleep(0.02)
                    continue
                with self._lock:
                    if r.status_code == 202 and r.json().get("stored") is True:
                        self.stored.add(report.report_id)
                    elif r.status_code == 503:
                        self.unavailable += 1
                        if not r.headers.get("retry-after", "").isdigit():
                            self.unavailable_without_retry_after += 1
                    else:
                        self.other[r.status_code] = self.other.get(r.status_code, 0) + 1
                if r.status_code == 503:
                    time.sleep(0.05)  # an agent waits Retry-After; the test only less

    def start(self) -> _ReportLoad:
        for k in range(self.threads):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=60)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill9_of_the_monitor_loses_no_acknowledged_report(
    backend: str, tmp_path: Path, schemas: Callable[[], str],
) -> None:
    """Reports are stored in group commits (monitor/reports.py): an answered report was
    committed, whichever batch it was in when the monitor died."""
    port = free_port()
    args = ["monitor", "run", "--insecure-http", "--port", str(port)]
    if backend == "sqlite":
        args += ["--data-dir", str(tmp_path / "mon")]
        url = f"sqlite:///{tmp_path / 'mon' / 'bootwatch.db'}"
        table = "monitor_reports"
    else:
        schema = schemas()
        args += ["--data-dir", str(tmp_path / "mon"), "--db", PG_URL, "--db-schema", schema]
        url, table = PG_URL, f'"{schema}".monitor_reports'
    monitor = Proc(args, port=port, log=tmp_path / "monitor.log", env=_env(tmp_path))
    monitor.start()
    load = _ReportLoad(f"http://127.0.0.1:{port}").start()
    try:
        until(lambda: len(load.stored) >= 300, 120, "300 reports answered")
        monitor.kill9()  # mid-load: a batch being written, reports waiting for the next
    finally:
        load.stop()
        monitor.stop()
    assert load.other == {}, (load.other, monitor.output())
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            kept = {str(v) for v in conn.execute(text(f"SELECT report_id FROM {table}"))
                    .scalars()}
    finally:
        engine.dispose()
    assert len(load.stored) >= 300
    assert load.stored - kept == set()


def test_the_monitors_database_away_answers_503_with_retry_after_then_recovers(
    tmp_path: Path,
) -> None:
    """The monitor's private PostgreSQL stopped under report load: reports are answered
    503 with Retry-After (which agents honour) while it is away, never stored-and-lost;
    once it is back the monitor stores reports again by itself."""
    with private_postgres() as pg:
        port = free_port()
        monitor = Proc(["monitor", "run", "--insecure-http", "--port", str(port),
                        "--data-dir", str(tmp_path / "mon"), "--db", pg.url],
                       port=port, log=tmp_path / "monitor.log", env=_env(tmp_path))
        monitor.start()
        load = _ReportLoad(f"http://127.0.0.1:{port}", threads=4).start()
        try:
            until(lambda: len(load.stored) >= 50, 60, "50 reports answered")
            pg.stop(mode="fast")
            until(lambda: load.unavailable >= 10, 60, "503 answers while PG is down")
            stored_while_down = len(load.stored)
            pg.start()
            until(lambda: len(load.stored) >= stored_while_down + 50, 120,
                  "reports stored again after PG is back")
        finally:
            load.stop()
            monitor.stop()
        assert load.unavailable_without_retry_after == 0, (load.unavailable, monitor.output())
        assert load.other == {}, (load.other, monitor.output())
        engine = create_engine(pg.url)
        try:
            with engine.connect() as conn:
                kept = {str(v) for v in conn.execute(
                    text("SELECT report_id FROM monitor_reports")).scalars()}
        finally:
            engine.dispose()
        assert load.stored - kept == set()
