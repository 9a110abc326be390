"""Monitor ingesters on JetStream: a durable pull consumer shared by any number of processes.

Why a pull consumer: every ``bootwatch monitor run --events nats://...`` binds
to the same durable consumer (default ``bootwatch-monitor``) and fetches
batches from it; JetStream hands each message to one fetcher at a time, so
the work is split between however many ingesters run, and one that dies
loses nothing: what it fetched and did not acknowledge is delivered again
after the ack wait.

For each batch: decode every message (:func:`decode_outcome`); a message
that does not decode will never decode, so it is terminated (``+TERM``) with
its stream sequence and the reason in the log, never retried.  The rest go
to :meth:`Monitor.ingest_outcomes` in one transaction, which is idempotent on
``event_id`` (a redelivered event, or one the service published twice beyond
JetStream's duplicate window, is stored once); then every message is
acknowledged.  When the transaction fails (database busy or away), the batch
is tried again twice, shortly; then its events are tried one by one so that
one bad event cannot hold back the others; those that still fail are
negatively acknowledged with a growing delay and come back later: an
ingestion failure never drops an event.

Consumer settings (used when the ingester creates the consumer; an existing
durable keeps its own): explicit acks; ack wait :data:`ACK_WAIT` seconds (a
batch of 500 takes well under a second; an ingester killed mid-batch delays
its batch by at most this); unlimited deliveries (a finite ``max_deliver``
would silently stop delivering events during a long database outage, and
undecodable messages are terminated explicitly instead); up to
:data:`MAX_ACK_PENDING` messages in flight across all ingesters.

The ingester owns one asyncio loop on its own thread and one NATS connection
that reconnects by itself after the server restarts; the database work runs
on a worker thread so the connection keeps answering pings meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Final, Protocol

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bootwatch.errors import BootwatchError, ConfigError, ProtocolError
from bootwatch.monitor.poison import refused
from bootwatch.protocol.outcome import BootEventTable, OutcomeEvent, decode_outcome
from bootwatch.protocol.outcome_encoding import ENCODING_HEADER, inflate_outcome
from bootwatch.service.events_nats import (
    DEFAULT_DURABLE,
    DEFAULT_STREAM,
    DEFAULT_SUBJECT,
    LoopThread,
    StreamLimits,
    check_name,
    check_subject,
    connect,
    ensure_stream,
    nats_target,
)
from bootwatch.service.logs import get_logger

__all__ = ["ACK_WAIT", "MAX_ACK_PENDING", "IngestCounts", "Ingests", "JetStreamIngester"]

#: seconds a fetched message may stay unacknowledged before JetStream delivers it again
ACK_WAIT: Final = 60.0
#: messages delivered and not yet acknowledged, across every ingester of the consumer
MAX_ACK_PENDING: Final = 20_000
#: how long one fetch waits for messages when the stream is empty
FETCH_WAIT: Final = 1.0
#: tries of a whole batch before its events are tried one by one
BATCH_ATTEMPTS: Final = 3
#: longest delay before a message whose ingestion failed is delivered again
MAX_RETRY_DELAY: Final = 30.0


class Ingests(Protocol):
    """What the ingester needs of the monitor (:class:`bootwatch.monitor.core.Monitor`)."""

    def ingest_outcomes(self, events: Sequence[OutcomeEvent]) -> list[bool]: ...


class IngestCounts:
    """Running totals (read by tests, benchmarks and the log)."""

    def __init__(self) -> None:
        self.stored = 0
        self.duplicates = 0
        self.terminated = 0
        self.retried = 0
        self.batches = 0


class JetStreamIngester:
    """Fetch outcome events from the durable consumer into the monitor (module docstring)."""

    def __init__(self, monitor: Ingests, url: str, *, stream: str = DEFAULT_STREAM,
                 subject: str = DEFAULT_SUBJECT, durable: str = DEFAULT_DURABLE,
                 batch: int = 500, ack_wait: float = ACK_WAIT, timeout: float = 10.0,
                 limits: StreamLimits | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if not 1 <= batch <= 10_000:
            raise ConfigError("the JetStream ingest batch must be 1-10000 events")
        if ack_wait <= 0 or timeout <= 0:
            raise ConfigError("the JetStream ack wait and timeout must be positive")
        self.monitor = monitor
        self.target = nats_target(url, env)
        self.stream = check_name(stream, "JetStream stream")
        self.subject = check_subject(subject)
        self.durable = check_name(durable, "JetStream consumer")
        self.batch = batch
        self.ack_wait = ack_wait
        self.timeout = timeout
        self.limits = limits or StreamLimits()
        self.counts = IngestCounts()
        #: boot events decoded before, shared by later events of the same images
        self._events = BootEventTable()
        self._loop: LoopThread | None = None
        self._main: Future[None] | None = None
        self._stopping = threading.Event()
        #: set while bound to the consumer (connected, stream and consumer checked)
        self.bound = threading.Event()
        self._nc: NatsClient | None = None
        self._sub: JetStreamContext.PullSubscription | None = None

    # --- lifecycle (called from plain threads: the app's lifespan) ----------------------

    def start(self) -> None:
        if self._loop is not None:
            return
        self._stopping.clear()
        self._loop = LoopThread("bootwatch-ingest-nats")
        self._main = asyncio.run_coroutine_threadsafe(self._run(), self._loop.loop)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand (ingest and ack it), then disconnect."""
        if self._loop is None:
            return
        self._stopping.set()
        if self._main is not None:
            try:
                self._main.result(timeout)
            except Exception as exc:  # a stop must not fail the monitor's shutdown
                self._main.cancel()
                get_logger().warning("JetStream ingester stopped uncleanly", extra={
                    "reason": f"{exc.__class__.__name__}: {exc}"})
        self.bound.clear()
        if self._nc is not None:
            nc = self._nc
            with contextlib.suppress(Exception):
                self._loop.run(nc.close(), 5.0)
        self._loop.stop()
        self._loop = None
        self._nc = self._sub = None

    # --- the loop ----------------------------------------------------------------------

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        if self._nc is None or self._nc.is_closed:
            self._nc = await connect(self.target, name="bootwatch-monitor-ingester",
                                     timeout=self.timeout)
        js = self._nc.jetstream(timeout=self.timeout)
        await ensure_stream(js, self.stream, self.subject, self.limits)
        config = ConsumerConfig(
            durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait,
            max_deliver=-1, max_ack_pending=MAX_ACK_PENDING, deliver_policy=DeliverPolicy.ALL,
            filter_subject=self.subject, description="bootwatch monitor ingesters",
        )
        sub = await js.pull_subscribe(self.subject, durable=self.durable, stream=self.stream,
                                      config=config)
        get_logger().info("JetStream ingester bound", extra={
            "nats": self.target.url, "stream": self.stream, "consumer": self.durable})
        return sub

    async def _run(self) -> None:
        """Fetch batch n+1 while batch n is decoded and stored (one transaction at a
        time, in order).  Decoding runs on the worker thread with the transaction, not on
        this loop's thread: two threads both running Python share one GIL, and the
        decoding and the ingestion, which both do, slowed each other down (the loop's
        thread is left with the network, which mostly waits)."""
        log = get_logger()
        delay = 0.5
        inflight: asyncio.Task[None] | None = None
        while not self._stopping.is_set():
            try:
                if self._sub is None:
                    self._sub = await self._subscribe()
                    self.bound.set()
                msgs = await self._sub.fetch(self.batch, timeout=FETCH_WAIT)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except Exception as exc:  # NATS away, or anything else: never stop ingesting
                log.warning("JetStream ingester waiting for NATS", extra={
                    "nats": self.target.url, "reason": f"{exc.__class__.__name__}: {exc}"})
                self.bound.clear()
                if self._sub is not None:
                    with contextlib.suppress(Exception):
                        await self._sub.unsubscribe()  # bound again on the next round
                if self._nc is not None and self._nc.is_closed:
                    self._nc = None
                self._sub = None
                await self._pause(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            if inflight is not None:
                await inflight
                inflight = None
            if msgs:
                inflight = asyncio.ensure_future(self._guarded_store(msgs))
        if inflight is not None:
            await inflight

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up for a stop."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _decode(self, msgs: list[Msg]) -> list[tuple[Msg, OutcomeEvent]]:
        good: list[tuple[Msg, OutcomeEvent]] = []
        for m, result in await asyncio.to_thread(_decode_all, msgs, self._events):
            if isinstance(result, OutcomeEvent):
                good.append((m, result))
                continue
            get_logger().error("JetStream message terminated: not an outcome event", extra={
                "stream": self.stream, "sequence": _seq(m), "reason": str(result)})
            await _quiet(m.term())
            self.counts.terminated += 1
        return good

    async def _guarded_store(self, msgs: list[Msg]) -> None:
        try:
            good = await self._decode(msgs)
            if good:
                await self._store(good)
        except Exception as exc:  # a bug in ingestion must not stop the ingester
            get_logger().error("outcome batch failed; JetStream delivers it again after the "
                               "ack wait", extra={"events": len(msgs),
                                                  "reason": f"{exc.__class__.__name__}: {exc}"})
            await asyncio.sleep(1.0)

    async def _store(self, good: list[tuple[Msg, OutcomeEvent]]) -> None:
        self.counts.batches += 1
        events = [ev for _, ev in good]
        for attempt in range(BATCH_ATTEMPTS):
            try:
                stored = await asyncio.to_thread(self.monitor.ingest_outcomes, events)
            except BootwatchError as exc:
                if attempt + 1 < BATCH_ATTEMPTS:
                    # a busy database (another process holding SQLite's write lock, a
                    # PostgreSQL failover): the same batch again shortly
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                get_logger().warning("outcome batch not ingested; trying its events one by "
                                     "one", extra={"events": len(good), "reason": str(exc)})
                await self._one_by_one(good)
                break
            self._count(stored)
            for m, _ in good:
                await _quiet(m.ack())
            break
        if self._nc is not None:
            # the acks are fire-and-forget: push them out now (one lost is a redelivery,
            # which ingestion absorbs as a duplicate)
            with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                await self._nc.flush(timeout=max(1, int(self.timeout)))

    async def _one_by_one(self, good: list[tuple[Msg, OutcomeEvent]]) -> None:
        failed: list[str] = []
        first = ""
        for m, ev in good:
            try:
                self._count(await asyncio.to_thread(self.monitor.ingest_outcomes, [ev]))
                await _quiet(m.ack())
            except BootwatchError as exc:
                if refused(exc):  # the database refuses a value: redelivery cannot help
                    get_logger().error("outcome event refused by the monitor's database; "
                                       "terminated", extra={"event_id": ev.event_id,
                                                            "reason": str(exc)[:500]})
                    await _quiet(m.term())
                    self.counts.terminated += 1
                    continue
                failed.append(ev.event_id)
                first = first or str(exc)
                tries = _delivered(m)
                await _quiet(m.nak(delay=min(MAX_RETRY_DELAY, 0.5 * 2 ** min(tries, 6))))
        if failed:
            self.counts.retried += len(failed)
            get_logger().error("outcome events not ingested; JetStream delivers them again", extra={
                "events": len(failed), "first_event": failed[0], "reason": first})
            # a database that is away fails every event: do not spin on it
            await asyncio.sleep(min(MAX_RETRY_DELAY, 1.0))

    def _count(self, stored: list[bool]) -> None:
        new = sum(stored)
        self.counts.stored += new
        self.counts.duplicates += len(stored) - new

    def wait_idle(self, expected: int, timeout: float) -> bool:
        """Wait until ``expected`` events were stored by this ingester (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.counts.stored >= expected:
                return True
            time.sleep(0.02)
        return self.counts.stored >= expected


def _decode_all(msgs: list[Msg], shared: BootEventTable,
                ) -> list[tuple[Msg, OutcomeEvent | ProtocolError]]:
    """Each message's event, or why it is not one (run on a worker thread, one batch at
    a time: ``shared`` is never used by two threads at once)."""
    out: list[tuple[Msg, OutcomeEvent | ProtocolError]] = []
    for m in msgs:
        try:
            data = m.data
            encoding = m.headers.get(ENCODING_HEADER) if m.headers else None
            if encoding is not None:  # an event over NATS' max_payload, compressed
                data = inflate_outcome(data, encoding)
            out.append((m, decode_outcome(data, shared=shared)))
        except ProtocolError as exc:
            out.append((m, exc))
        except Exception as exc:  # a decoder bug: this message would fail forever and
            # hold back the batch it came in; it is terminated with the error in the log
            out.append((m, ProtocolError(f"outcome event: the decoder failed on it "
                                         f"({exc.__class__.__name__}: {exc})")))
    return out


def _seq(m: Msg) -> int | None:
    with contextlib.suppress(Exception):
        return int(m.metadata.sequence.stream)
    return None


def _delivered(m: Msg) -> int:
    with contextlib.suppress(Exception):
        return int(m.metadata.num_delivered)
    return 1


async def _quiet(coro: Any) -> None:
    """Send an ack/nak/term; a lost one is a redelivery, which ingestion absorbs."""
    with contextlib.suppress(nats.errors.Error, OSError):
        await coro
