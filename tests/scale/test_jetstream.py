"""Outcome events over NATS JetStream, for real: the service's sink publishes, monitor
ingesters consume the durable consumer into SQLite or PostgreSQL.

What must hold: every event whose delivery was acknowledged is in the monitor exactly
once (an alert's ``count`` counts the denials applied, so an event applied twice would
show), whatever is redelivered, published twice, killed or restarted meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from bwservers import PG_URL, pg_schema
from sqlalchemy import select

from bootwatch.errors import ConfigError, EventDeliveryError
from bootwatch.monitor.container import MonitorContainer, bootstrap
from bootwatch.monitor.models import AlertRow, OutcomeRow
from bootwatch.monitor.nats_ingest import JetStreamIngester
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.outcome import OutcomeEvent, Verdict, encode_outcome, outcome_to_json
from bootwatch.service.events_nats import JetStreamSink, StreamLimits

from .conftest import Names, _delete_stream

pytestmark = [pytest.mark.nats]

NATS_SERVER = "/usr/sbin/nats-server"



@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def monitor_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'monitor.db'}", ""
        return
    with pg_schema() as schema:
        yield PG_URL, schema


@pytest.fixture
def monitor(monitor_db: tuple[str, str], tmp_path: Path) -> Iterator[MonitorContainer]:
    c = bootstrap(MonitorSettings(data_dir=tmp_path, db_url=monitor_db[0],
                                  db_schema=monitor_db[1], stale_after_seconds=3600))
    yield c
    c.engine.dispose()


def deny_event(vm_id: str, i: int) -> OutcomeEvent:
    """A denied attestation of ``vm_id`` (each one increments the VM's open alert's count)."""
    return OutcomeEvent(
        event_id=uuid.uuid4().hex, time=datetime.now(UTC) + timedelta(microseconds=i),
        provider="shared", attestation_type="AzureGuest", verdict=Verdict.DENY,
        reason="policy denied", policy_hash="h" * 43, failed_check="policy",
        deciding_rule="rule-1", vm_id=vm_id, pcrs={0: "ab" * 32, 7: "cd" * 32},
        reset_count=1, secure_boot=True,
    )


def fleet(c: MonitorContainer, n_vms: int) -> list[str]:
    vms = [str(uuid.UUID(int=uuid.uuid4().int)).upper() for _ in range(n_vms)]
    for vm in vms:
        c.monitor.enable(vm, name=f"vm-{vm[-6:]}")
    return vms


def stored_ids(c: MonitorContainer) -> list[str]:
    with c.monitor.read() as s:
        return list(s.scalars(select(OutcomeRow.event_id)))


def alert_counts(c: MonitorContainer) -> dict[str, int]:
    with c.monitor.read() as s:
        return {vm: n for vm, n in s.execute(
            select(AlertRow.vm_id, AlertRow.count).where(AlertRow.reason == "policy_denied"))}


def wait_until(what: str, cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def check_exactly_once(c: MonitorContainer, events: list[OutcomeEvent], *,
                       in_order: bool = True) -> None:
    """Every event stored once, and applied at most once: each denial applied bumps its
    VM's alert count (a repeat of the latest event would bump it again).  An event that
    arrives after a later one of its VM is history only, so when ingesters may reorder
    (two of them, redeliveries) the counts are at most the denials, else exactly."""
    ids = stored_ids(c)
    want = {e.event_id for e in events}
    assert len(ids) == len(set(ids))
    assert set(ids) == want, f"lost {len(want - set(ids))}, unexpected {len(set(ids) - want)}"
    counts, denials = alert_counts(c), Counter(e.vm_id for e in events)
    assert set(counts) == set(denials)
    if in_order:
        assert counts == dict(denials)
    else:
        assert all(1 <= counts[vm] <= denials[vm] for vm in denials), (counts, denials)


def sink_for(url: str, names: Names, **kw: Any) -> JetStreamSink:
    return JetStreamSink(url, stream=names.stream, subject=names.subject, **kw)


def ingester_for(c: MonitorContainer, url: str, names: Names, **kw: Any) -> JetStreamIngester:
    return JetStreamIngester(c.monitor, url, stream=names.stream, subject=names.subject,
                             durable=names.durable, **kw)


def test_deliver_ingest_monitor_rows(jetstream: str, names: Names,
                                     monitor: MonitorContainer) -> None:
    vms = fleet(monitor, 3)
    events = [deny_event(vms[i % 3], i) for i in range(120)]
    sink = sink_for(jetstream, names)
    ing = ingester_for(monitor, jetstream, names)
    ing.start()
    try:
        sink.deliver(events[:70])
        sink.deliver(events[70:])
        wait_until("120 events ingested", lambda: ing.counts.stored >= 120)
    finally:
        ing.stop()
        sink.close()
    check_exactly_once(monitor, events)
    assert ing.counts.duplicates == 0 and ing.counts.terminated == 0


def test_given_encodings_are_published_as_they_are(jetstream: str, names: Names,
                                                   monitor: MonitorContainer) -> None:
    """The relay hands the sink each event's encoding from the outbox row: the sink
    publishes those bytes and does not encode the event again (bodies laid out
    differently from encode_outcome's compact form show which bytes went out)."""
    vms = fleet(monitor, 2)
    events = [deny_event(vms[i % 2], i) for i in range(6)]
    bodies = [json.dumps(outcome_to_json(e), indent=1).encode() for e in events]
    assert all(b != encode_outcome(e) for b, e in zip(bodies, events, strict=True))
    sink = sink_for(jetstream, names)
    try:
        sink.deliver(events, bodies)

        async def published() -> list[bytes]:
            nc = await nats.connect(jetstream)
            try:
                js = nc.jetstream()
                return [bytes((await js.get_msg(names.stream, seq)).data or b"")
                        for seq in range(1, len(events) + 1)]
            finally:
                await nc.close()

        assert asyncio.run(published()) == bodies
    finally:
        sink.close()
    ing = ingester_for(monitor, jetstream, names)
    ing.start()
    try:
        wait_until("6 events ingested", lambda: ing.counts.stored >= 6)
    finally:
        ing.stop()
    check_exactly_once(monitor, events)


def test_same_events_delivered_twice_are_stored_once(jetstream: str, names: Names,
                                                     monitor: MonitorContainer) -> None:
    vms = fleet(monitor, 2)
    events = [deny_event(vms[i % 2], i) for i in range(50)]
    sink = sink_for(jetstream, names)
    try:
        sink.deliver(events)
        sink.deliver(events[10:40])  # a relay retrying a batch it was not sure of

        async def stream_messages() -> int:
            nc = await nats.connect(jetstream)
            try:
                info = await nc.jetstream().stream_info(names.stream)
                return int(info.state.messages)
            finally:
                await nc.close()

        assert asyncio.run(stream_messages()) == 50  # JetStream dropped the repeats by id
        ing = ingester_for(monitor, jetstream, names)
        ing.start()
        try:
            wait_until("50 events ingested", lambda: ing.counts.stored >= 50)
        finally:
            ing.stop()
    finally:
        sink.close()
    check_exactly_once(monitor, events)


CHILD = r"""
import os, signal, sys
from bootwatch.monitor.container import bootstrap
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.nats_ingest import JetStreamIngester

url, stream, subject, durable, db_url, schema, data_dir = sys.argv[1:8]
c = bootstrap(MonitorSettings(data_dir=data_dir, db_url=db_url, db_schema=schema))

class DiesBeforeAck:
    def ingest_outcomes(self, events):
        c.monitor.ingest_outcomes(events)  # committed ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... and killed before the acks

ing = JetStreamIngester(DiesBeforeAck(), url, stream=stream, subject=subject, durable=durable,
                        batch=7, ack_wait=2.0)
ing.start()
signal.pause()
"""


def test_ingester_killed_before_ack_nothing_lost_nothing_doubled(
        jetstream: str, names: Names, monitor: MonitorContainer,
        monitor_db: tuple[str, str], tmp_path: Path) -> None:
    vms = fleet(monitor, 4)
    events = [deny_event(vms[i % 4], i) for i in range(200)]
    sink = sink_for(jetstream, names)
    try:
        sink.deliver(events)
    finally:
        sink.close()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, jetstream, names.stream, names.subject, names.durable,
         monitor_db[0], monitor_db[1], str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert len(stored_ids(monitor)) == 7  # the dead ingester committed one batch, acked none
    ing = ingester_for(monitor, jetstream, names, ack_wait=2.0)
    ing.start()
    try:
        # the 7 come back after the consumer's ack wait, as duplicates
        wait_until("all delivered again", lambda: ing.counts.stored + ing.counts.duplicates
                   >= 200, timeout=60)
    finally:
        ing.stop()
    assert ing.counts.stored == 193 and ing.counts.duplicates == 7
    # (what the dead one had fetched beyond its committed batch comes back late: reordered)
    check_exactly_once(monitor, events, in_order=False)


def test_two_ingesters_share_the_work(jetstream: str, names: Names,
                                      monitor: MonitorContainer) -> None:
    vms = fleet(monitor, 10)
    events = [deny_event(vms[i % 10], i) for i in range(1500)]
    sink = sink_for(jetstream, names)
    a = ingester_for(monitor, jetstream, names, batch=50)
    b = ingester_for(monitor, jetstream, names, batch=50)
    a.start()
    b.start()
    try:
        assert a.bound.wait(60) and b.bound.wait(60)
        for k in range(0, len(events), 500):
            sink.deliver(events[k:k + 500])
        wait_until("1500 events ingested",
                   lambda: a.counts.stored + b.counts.stored >= 1500, timeout=120)
    finally:
        a.stop()
        b.stop()
        sink.close()
    assert a.counts.stored > 0 and b.counts.stored > 0, (a.counts.stored, b.counts.stored)
    assert a.counts.stored + b.counts.stored == 1500
    check_exactly_once(monitor, events, in_order=False)


def test_undecodable_message_is_terminated_not_retried(
        jetstream: str, names: Names, monitor: MonitorContainer) -> None:
    vms = fleet(monitor, 1)
    events = [deny_event(vms[0], i) for i in range(5)]
    sink = sink_for(jetstream, names)
    try:
        sink.deliver(events[:2])

        async def publish_garbage() -> None:
            nc = await nats.connect(jetstream)
            try:
                js = nc.jetstream()
                await js.publish(names.subject, b'{"schema": 1, "event_id": 5}')
                await js.publish(names.subject, b"\xff not json")
            finally:
                await nc.close()

        asyncio.run(publish_garbage())
        sink.deliver(events[2:])
    finally:
        sink.close()
    ing = ingester_for(monitor, jetstream, names, ack_wait=1.0)
    ing.start()
    try:
        wait_until("5 events ingested", lambda: ing.counts.stored >= 5)
        wait_until("2 terminated", lambda: ing.counts.terminated >= 2)
        time.sleep(2.5)  # past the ack wait: a terminated message must not come back
    finally:
        ing.stop()
    assert ing.counts.terminated == 2

    async def consumer_state() -> tuple[int, int, int]:
        nc = await nats.connect(jetstream)
        try:
            js = nc.jetstream()
            ci = await js.consumer_info(names.stream, names.durable)
            si = await js.stream_info(names.stream)
            return int(ci.num_ack_pending), int(ci.num_pending), int(si.state.messages)
        finally:
            await nc.close()

    assert asyncio.run(consumer_state()) == (0, 0, 0)
    check_exactly_once(monitor, events)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_message_the_decoder_fails_on_is_terminated_not_retried_forever() -> None:
    """Whatever the decoder raises for a message (ProtocolError, or a bug) makes that one
    message a termination with the reason: raised from the batch, it would leave the
    whole batch unacknowledged and redelivered forever."""
    from bootwatch.monitor.nats_ingest import _decode_all
    from bootwatch.protocol.outcome import BootEventTable

    class _Message:  # what _decode_all reads of a nats-py Msg
        def __init__(self, data: Any) -> None:
            self.data = data
            self.headers = None

    good = encode_outcome(deny_event("VM-1", 0))
    out = _decode_all([_Message(good), _Message(None), _Message(b"{"), _Message(good)],  # type: ignore[list-item]
                      BootEventTable())
    kinds = [type(r).__name__ for _, r in out]
    assert kinds == ["OutcomeEvent", "ProtocolError", "ProtocolError", "OutcomeEvent"]
    assert "the decoder failed on it (TypeError" in str(out[1][1])


def test_nats_unreachable_is_a_clear_error_not_a_hang() -> None:
    sink = JetStreamSink(f"nats://127.0.0.1:{free_port()}", timeout=2.0)
    try:
        with pytest.raises(EventDeliveryError, match=r"unreachable within 2 s.*nats-server"):
            sink.deliver([deny_event("VM-1", 0)])
    finally:
        sink.close()
    with pytest.raises(ConfigError, match="no user, password or token in the URL"):
        JetStreamSink("nats://bw:secret@127.0.0.1:4222")
    with pytest.raises(ConfigError, match="nats://HOST:PORT"):
        JetStreamSink("http://127.0.0.1:4222")
    with pytest.raises(ConfigError, match="stream"):
        JetStreamSink("nats://127.0.0.1:4222", stream="bad.name")


def incompressible_claims(n: int) -> tuple[tuple[str, str], ...]:
    """Claims that zlib cannot shrink below NATS' default max_payload (1 MiB) at n=600."""
    return tuple((f"c{i}", base64.b64encode(os.urandom(2250)).decode()) for i in range(n))


def test_too_large_event_is_refused_with_the_limit(jetstream: str, names: Names) -> None:
    from dataclasses import replace

    big = replace(deny_event("VM-1", 0), reason="x" * 3000, claims=incompressible_claims(600))
    assert 1024 * 1024 < len(encode_outcome(big)) < 2 * 1024 * 1024
    sink = sink_for(jetstream, names)
    try:
        with pytest.raises(EventDeliveryError, match=r"compressed\), more than the NATS "
                                                     r"server's max_payload"):
            sink.deliver([big])
    finally:
        sink.close()


def test_event_over_max_payload_crosses_compressed_and_is_ingested(
        jetstream: str, names: Names, monitor: MonitorContainer) -> None:
    """An event under the outcome limit (2 MiB) but over NATS' max_payload (1 MiB) goes
    zlib-compressed with its header; the ingester inflates it and stores it like any
    other (it was dropped by name before)."""
    from dataclasses import replace

    from bootwatch.protocol.outcome_encoding import ENCODING_HEADER

    vms = fleet(monitor, 1)
    big = replace(deny_event(vms[0], 0),
                  claims=tuple((f"c{i}", "y" * 3000) for i in range(500)))
    assert 1024 * 1024 < len(encode_outcome(big)) < 2 * 1024 * 1024
    small = deny_event(vms[0], 1)
    sink = sink_for(jetstream, names)
    try:
        sink.deliver([big, small])
    finally:
        sink.close()

    async def headers() -> list[str | None]:
        nc = await nats.connect(jetstream)
        try:
            js = nc.jetstream()
            got = []
            for seq in (1, 2):
                msg = await js.get_msg(names.stream, seq)
                got.append((msg.headers or {}).get(ENCODING_HEADER))
            return got
        finally:
            await nc.close()

    assert asyncio.run(headers()) == ["zlib", None]
    ing = ingester_for(monitor, jetstream, names)
    ing.start()
    try:
        wait_until("2 events ingested", lambda: ing.counts.stored >= 2)
    finally:
        ing.stop()
    assert ing.counts.terminated == 0
    check_exactly_once(monitor, [big, small])


def test_full_stream_refuses_with_a_reason(jetstream: str, names: Names) -> None:
    sink = sink_for(jetstream, names, limits=StreamLimits(max_bytes=4000))
    try:
        with pytest.raises(EventDeliveryError, match=r"is full \(maximum bytes exceeded\)"):
            for i in range(50):
                sink.deliver([deny_event("VM-1", i)])
    finally:
        sink.close()


def test_stream_name_or_subject_clash_is_named(jetstream: str, names: Names) -> None:
    first = sink_for(jetstream, names)
    other = Names(names.stream + "_B", names.subject, names.durable)
    clash = sink_for(jetstream, other)
    wrong_subject = JetStreamSink(jetstream, stream=names.stream, subject=names.subject + ".x")
    try:
        first.deliver([deny_event("VM-1", 0)])
        with pytest.raises(EventDeliveryError, match=f"refused to create stream {other.stream}"):
            clash.deliver([deny_event("VM-1", 1)])
        with pytest.raises(EventDeliveryError, match=f"{names.stream} exists but stores"):
            wrong_subject.deliver([deny_event("VM-1", 2)])
    finally:
        for s in (first, clash, wrong_subject):
            s.close()


def test_deleted_stream_is_reported_then_recreated(jetstream: str, names: Names) -> None:
    sink = sink_for(jetstream, names)
    try:
        sink.deliver([deny_event("VM-1", 0)])
        asyncio.run(_delete_stream(jetstream, names.stream))
        with pytest.raises(EventDeliveryError, match="no JetStream stream stores"):
            sink.deliver([deny_event("VM-1", 1)])
        sink.deliver([deny_event("VM-1", 2)])  # the next attempt recreates it
    finally:
        sink.close()


class OwnNats:
    """A nats-server of the test's own (port, store directory) that it can kill -9."""

    def __init__(self, store: Path) -> None:
        if not shutil.which(NATS_SERVER):
            pytest.fail(f"{NATS_SERVER} is not installed")
        self.port = free_port()
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd",
             str(self.store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("own nats-server did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.mark.slow
def test_nats_server_killed_mid_stream_loses_nothing_acknowledged(
        names: Names, monitor: MonitorContainer, tmp_path: Path) -> None:
    server = OwnNats(tmp_path / "jetstream")
    server.start()
    vms = fleet(monitor, 5)
    events = [deny_event(vms[i % 5], i) for i in range(1500)]
    batches = [events[k:k + 100] for k in range(0, len(events), 100)]
    sink = sink_for(server.url, names, timeout=2.0)
    ing = ingester_for(monitor, server.url, names, batch=100, ack_wait=5.0, timeout=2.0)
    ing.start()
    acknowledged: list[OutcomeEvent] = []
    failures = 0
    try:
        for n, batch in enumerate(batches):
            if n == 6:
                server.kill9()
                # while it is down, delivery fails with a reason (the relay keeps the events)
                with pytest.raises(EventDeliveryError):
                    sink.deliver(batch)
                server.start()
            while True:  # the relay: the same events again until acknowledged
                try:
                    sink.deliver(batch)
                    break
                except EventDeliveryError:
                    failures += 1
                    assert failures < 60, "JetStream did not come back"
                    time.sleep(0.5)
            acknowledged.extend(batch)
        wait_until("every acknowledged event ingested",
                   lambda: set(stored_ids(monitor)) >= {e.event_id for e in acknowledged},
                   timeout=120)
    finally:
        ing.stop()
        sink.close()
        server.stop()
    assert len(acknowledged) == 1500
    check_exactly_once(monitor, acknowledged, in_order=False)


def _metric(url: str, name: str) -> float:
    import httpx

    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.postgres
@pytest.mark.slow
def test_two_monitor_processes_consume_events(jetstream: str, names: Names,
                                              tmp_path: Path) -> None:
    """``bootwatch monitor run --events nats://...`` twice on one PostgreSQL: each serves
    its API and ingests, the events are split between them, each stored once."""
    import httpx

    exe = str(Path(sys.executable).parent / "bootwatch")
    with pg_schema() as schema:
        procs: list[subprocess.Popen[bytes]] = []
        urls: list[str] = []
        try:
            for k in range(2):
                port = free_port()
                procs.append(subprocess.Popen(
                    [exe, "monitor", "run", "--host", "127.0.0.1", "--port", str(port),
                     "--insecure-http", "--db", PG_URL, "--db-schema", schema,
                     "--data-dir", str(tmp_path / f"m{k}"), "--events", jetstream,
                     "--events-stream", names.stream, "--events-subject", names.subject,
                     "--events-consumer", names.durable],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                urls.append(f"http://127.0.0.1:{port}")
            for url in urls:
                wait_until(f"{url} up", lambda u=url: _up(u), timeout=60)
            vms = [str(uuid.uuid4()).upper() for _ in range(4)]
            events = [deny_event(vms[i % 4], i) for i in range(2000)]
            sink = sink_for(jetstream, names)
            try:
                for k in range(0, len(events), 100):
                    sink.deliver(events[k:k + 100])
            finally:
                sink.close()
            wait_until("2000 ingested", lambda: sum(
                _metric(u, "bootwatch_monitor_outcomes_total") for u in urls) >= 2000,
                timeout=120)
            per = [_metric(u, "bootwatch_monitor_outcomes_total") for u in urls]
            assert sum(per) == 2000 and all(n > 0 for n in per), per
            summary = httpx.get(urls[0] + "/api/v1/vms?limit=10", timeout=5).json()
            assert {v["vm_id"] for v in summary["items"]} >= set(vms)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_monitor_run_events_takes_nats_only(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bootwatch.cli.main import cli

    res = CliRunner().invoke(cli, ["monitor", "run", "--data-dir", str(tmp_path), "--events",
                                   "https://monitor.example:8444"])
    assert isinstance(res.exception, ConfigError)
    assert "consumes outcome events from NATS JetStream" in str(res.exception)


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_event_the_database_refuses_is_terminated_not_redelivered(
        jetstream: str, names: Names, monitor: MonitorContainer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An event the monitor's database refuses for good (a value no column holds) was
    nak'd and redelivered for ever; now it is terminated and the rest stored."""
    from sqlalchemy.exc import DataError

    from bootwatch.errors import StorageError

    vms = fleet(monitor, 1)
    events = [deny_event(vms[0], i) for i in range(5)]
    poison = events[2].event_id
    real = monitor.monitor.ingest_outcomes

    def refusing(batch: Any) -> list[bool]:
        if any(e.event_id == poison for e in batch):
            cause = DataError("INSERT", {}, Exception("value out of range"))
            raise StorageError("monitor database error: DataError") from cause
        return real(batch)

    monkeypatch.setattr(monitor.monitor, "ingest_outcomes", refusing)
    sink = sink_for(jetstream, names)
    try:
        sink.deliver(events)
    finally:
        sink.close()
    ing = ingester_for(monitor, jetstream, names, ack_wait=1.0)
    ing.start()
    try:
        wait_until("4 events ingested", lambda: ing.counts.stored >= 4)
        wait_until("1 terminated", lambda: ing.counts.terminated >= 1)
        time.sleep(2.5)  # past the ack wait: a terminated message must not come back
    finally:
        ing.stop()
    assert (ing.counts.stored, ing.counts.terminated, ing.counts.retried) == (4, 1, 0)
