"""Outcome events over NATS JetStream: the service's durable event sink.

Why a broker: an answered attestation's outcome event must survive a kill of
the service, of the monitor and of the network between them.  The service
keeps each event in its attestation record row (committed before the HTTP
answer); a relay hands committed events to an event sink whose ``deliver``
returns only once the other side holds them durably.  :class:`JetStreamSink`
is that sink for JetStream: each event is published as compact JSON
(:func:`~bootwatch.protocol.outcome.encode_outcome`) to one subject of one
file-backed stream, with the ``Nats-Msg-Id`` header set to the event id, and
``deliver`` waits for every publish acknowledgement.  JetStream drops a
message whose id it saw within the stream's duplicate window, so a relay that
retries a batch after a partial failure stores nothing twice; beyond the
window the monitor's ingestion is idempotent on ``event_id`` anyway.

The stream is created when missing (work-queue retention: a message leaves
the stream when an ingester acknowledges it; file storage; the limits of
:class:`StreamLimits`; ``discard: new``, so a full stream refuses new events,
the relay keeps them in the database and retries, and nothing is dropped to
make room).  A stream that already exists is used as the operator configured
it, as long as it stores our subject.

Connection: one NATS connection owned by an asyncio loop on the sink's own
thread (``deliver`` is called from a plain thread).  The client reconnects by
itself after the server restarts; while it is away ``deliver`` fails with
:class:`~bootwatch.errors.EventDeliveryError` after ``timeout`` seconds.
Credentials never travel on the command line: the URL must carry no user or
password; a token comes from ``BOOTWATCH_NATS_TOKEN`` (or the file named by
``BOOTWATCH_NATS_TOKEN_FILE``), a user and password from ``BOOTWATCH_NATS_USER``
and ``BOOTWATCH_NATS_PASSWORD``; ``tls://`` URLs verify the server against the
system's CAs or the bundle in ``BOOTWATCH_NATS_CA``.  docs/monitor.md ("Events
over NATS JetStream") has the names, limits and guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import threading
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from bootwatch.errors import ConfigError, EventDeliveryError, EventRejectedError
from bootwatch.protocol.outcome import OutcomeEvent, encode_outcome
from bootwatch.protocol.outcome_encoding import ENCODING_HEADER, ZLIB, deflate_outcome
from bootwatch.service.logs import get_logger

__all__ = [
    "DEFAULT_DURABLE",
    "DEFAULT_STREAM",
    "DEFAULT_SUBJECT",
    "JetStreamSink",
    "LoopThread",
    "NatsTarget",
    "StreamLimits",
    "connect",
    "ensure_stream",
    "nats_target",
]

#: the stream that holds outcome events until an ingester acknowledges them
DEFAULT_STREAM: Final = "BOOTWATCH_OUTCOMES"
#: the subject the service publishes each outcome event to
DEFAULT_SUBJECT: Final = "bootwatch.outcomes"
#: the durable pull consumer shared by every monitor ingester
DEFAULT_DURABLE: Final = "bootwatch-monitor"

_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_SUBJECT_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,15}\Z")
_MAX_TOKEN_FILE: Final = 64 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class StreamLimits:
    """The limits a stream is created with (an existing stream keeps its own).

    With work-queue retention a message occupies the stream only until an
    ingester acknowledges it, so these bound the backlog, not a history."""

    #: an event nobody ingested within this many seconds is removed by the server
    max_age_seconds: float = 7 * 24 * 3600.0
    #: backlog size; when reached the stream refuses new events (``discard: new``)
    max_bytes: int = 4 * 1024**3
    #: seconds within which a repeated ``Nats-Msg-Id`` is dropped by the server
    duplicate_window_seconds: float = 600.0
    #: copies in a JetStream cluster (1 on a single server)
    replicas: int = 1

    def __post_init__(self) -> None:
        if self.max_age_seconds <= 0 or self.max_bytes <= 0:
            raise ConfigError("JetStream stream limits must be positive")
        if not 0 < self.duplicate_window_seconds <= self.max_age_seconds:
            raise ConfigError("the JetStream duplicate window must be positive and at most "
                              "the stream's max age")
        if not 1 <= self.replicas <= 5:
            raise ConfigError("JetStream replicas must be 1-5")


@dataclass(frozen=True)
class NatsTarget:
    """Where NATS is and how to log in; secrets from the environment, never argv."""

    url: str
    token: str = field(default="", repr=False)
    user: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""

    @property
    def tls(self) -> bool:
        return self.url.startswith("tls://")


def check_name(value: str, what: str) -> str:
    """A stream or consumer name: letters, digits, ``_`` and ``-`` (NATS forbids dots)."""
    if not _NAME_RE.match(value):
        raise ConfigError(f"{what} {value!r}: use 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def check_subject(value: str) -> str:
    if not _SUBJECT_RE.match(value):
        raise ConfigError(f"JetStream subject {value!r}: use dot-separated tokens of "
                          "A-Z a-z 0-9 _ - (no wildcards)")
    return value


def nats_target(url: str, env: Mapping[str, str] | None = None) -> NatsTarget:
    """Check ``nats://HOST:PORT`` (or ``tls://``) and read credentials from the environment."""
    env = os.environ if env is None else env
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"NATS URL {url!r}: {exc}") from None
    if parts.scheme not in ("nats", "tls"):
        raise ConfigError(f"NATS URL {url!r}: use nats://HOST:PORT or tls://HOST:PORT")
    if parts.username or parts.password:
        raise ConfigError("NATS URL: put no user, password or token in the URL (it would show "
                          "in the process list); use BOOTWATCH_NATS_TOKEN, "
                          "BOOTWATCH_NATS_TOKEN_FILE or "
                          "BOOTWATCH_NATS_USER/BOOTWATCH_NATS_PASSWORD")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"NATS URL {url!r}: expected {parts.scheme}://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    clean = f"{parts.scheme}://{host}:{port or 4222}"
    token = env.get("BOOTWATCH_NATS_TOKEN", "")
    token_file = env.get("BOOTWATCH_NATS_TOKEN_FILE", "")
    if token_file:
        try:
            path = Path(token_file)
            if path.stat().st_size > _MAX_TOKEN_FILE:
                raise ConfigError(f"BOOTWATCH_NATS_TOKEN_FILE {token_file}: larger than "
                                  f"{_MAX_TOKEN_FILE} bytes")
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"BOOTWATCH_NATS_TOKEN_FILE {token_file}: {exc.strerror}") from None
    user, password = env.get("BOOTWATCH_NATS_USER", ""), env.get("BOOTWATCH_NATS_PASSWORD", "")
    if token and user:
        raise ConfigError("set either a NATS token or a NATS user and password, not both")
    if bool(user) != bool(password):
        raise ConfigError("BOOTWATCH_NATS_USER and BOOTWATCH_NATS_PASSWORD go together")
    return NatsTarget(clean, token=token, user=user, password=password,
                      ca_file=env.get("BOOTWATCH_NATS_CA", ""))


class LoopThread:
    """An asyncio loop on a daemon thread; plain threads submit coroutines to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop; :class:`TimeoutError` (and cancel it) after ``timeout``."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


async def connect(target: NatsTarget, *, name: str, timeout: float) -> NatsClient:
    """Connect within ``timeout`` seconds; afterwards the client reconnects forever.

    (nats-py retries a first connection as often as a reconnection, so the
    bound here is what keeps an unreachable server from hanging the caller.)"""
    log = get_logger()

    async def on_error(exc: Exception) -> None:
        log.debug("NATS client error", extra={"reason": f"{exc.__class__.__name__}: {exc}"})

    async def on_disconnected() -> None:
        if not nc.is_closed:  # (a close of our own also reports a disconnection)
            log.warning("NATS disconnected; reconnecting", extra={"nats": target.url})

    async def on_reconnected() -> None:
        log.info("NATS reconnected", extra={"nats": target.url})

    tls: ssl.SSLContext | None = None
    if target.tls:
        tls = ssl.create_default_context(cafile=target.ca_file or None)
    options: dict[str, Any] = {}
    if target.token:
        options["token"] = target.token
    if target.user:
        options["user"], options["password"] = target.user, target.password
    nc = NatsClient()
    try:
        await asyncio.wait_for(nc.connect(
            servers=[target.url], name=name, tls=tls, connect_timeout=max(1, int(timeout)),
            allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=1,
            ping_interval=10, max_outstanding_pings=3, error_cb=on_error,
            disconnected_cb=on_disconnected, reconnected_cb=on_reconnected, **options,
        ), timeout)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        why = "no answer" if isinstance(exc, TimeoutError) else f"{exc.__class__.__name__}: {exc}"
        raise EventDeliveryError(f"NATS at {target.url} unreachable within {timeout:g} s "
                                 f"({why}); is nats-server running with -js?") from None
    return nc


def _stream_config(stream: str, subject: str, limits: StreamLimits) -> StreamConfig:
    return StreamConfig(
        name=stream, subjects=[subject], description="bootwatch attestation outcome events",
        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
        discard=DiscardPolicy.NEW, max_age=limits.max_age_seconds, max_bytes=limits.max_bytes,
        duplicate_window=limits.duplicate_window_seconds, num_replicas=limits.replicas,
    )


async def ensure_stream(js: JetStreamContext, stream: str, subject: str,
                        limits: StreamLimits) -> None:
    """Create the stream when missing; check an existing one stores ``subject``."""
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(_stream_config(stream, subject, limits))
            get_logger().info("JetStream stream created",
                              extra={"stream": stream, "subject": subject})
            return
        except nats.js.errors.BadRequestError as exc:
            try:
                info = await js.stream_info(stream)  # another process created it meanwhile
            except nats.js.errors.NotFoundError:
                raise EventDeliveryError(f"JetStream refused to create stream {stream} for "
                                         f"{subject!r}: {exc.description}") from None
        except nats.js.errors.APIError as exc:
            raise EventDeliveryError(f"JetStream refused to create stream {stream}: "
                                     f"{exc.description} (code {exc.err_code})") from None
    except nats.js.errors.ServiceUnavailableError:
        raise EventDeliveryError(f"NATS has no JetStream (stream {stream}); start nats-server "
                                 "with -js") from None
    subjects = info.config.subjects or []
    if subject not in subjects:
        raise EventDeliveryError(f"JetStream stream {stream} exists but stores {subjects}, not "
                                 f"{subject!r}; choose another stream or subject")


class JetStreamSink:
    """Durable outcome delivery to a JetStream stream (see the module docstring)."""

    def __init__(self, url: str, *, stream: str = DEFAULT_STREAM, subject: str = DEFAULT_SUBJECT,
                 timeout: float = 10.0, limits: StreamLimits | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if timeout <= 0:
            raise ConfigError("the JetStream publish timeout must be positive")
        self.target = nats_target(url, env)
        self.stream = check_name(stream, "JetStream stream")
        self.subject = check_subject(subject)
        self.timeout = timeout
        self.limits = limits or StreamLimits()
        self._loop = LoopThread("bootwatch-events-nats")
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        #: the reply inbox of this connection's publishes, and the acks awaited on it
        self._inbox = ""
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._seq = 0
        self._stream_ok = False
        self._lock = threading.Lock()
        self._closed = False

    def deliver(self, events: Sequence[OutcomeEvent],
                bodies: Sequence[bytes] | None = None) -> None:
        """Return once JetStream acknowledged every event; :class:`EventDeliveryError` else,
        or :class:`EventRejectedError` (once every other event is acknowledged) for an
        event larger than the server's ``max_payload``, which no retry can publish.
        ``bodies``: the events' encodings when the caller has them (the relay does)."""
        if not events:
            return
        with self._lock:
            if self._closed:
                raise EventDeliveryError("the JetStream sink is closed")
            try:
                # connect, stream check and acknowledgements are each bounded by timeout
                self._loop.run(self._deliver(events, bodies), 3 * self.timeout + 1.0)
            except TimeoutError:
                raise EventDeliveryError(
                    f"JetStream at {self.target.url} did not acknowledge {len(events)} "
                    f"event(s) within {self.timeout:g} s (server down, restarting or "
                    "overloaded); the relay retries") from None

    async def _client(self) -> tuple[NatsClient, JetStreamContext]:
        if self._nc is None or self._nc.is_closed:
            self._nc = await connect(self.target, name="bootwatch-service",
                                     timeout=self.timeout)
            self._js = self._nc.jetstream(timeout=self.timeout)
            self._stream_ok = False
            self._inbox = self._nc.new_inbox()
            await self._nc.subscribe(self._inbox + ".*", cb=self._on_ack)
        assert self._js is not None
        if not self._stream_ok:
            try:
                await asyncio.wait_for(
                    ensure_stream(self._js, self.stream, self.subject, self.limits),
                    self.timeout)
            except (TimeoutError, nats.errors.Error) as exc:
                raise EventDeliveryError(f"JetStream stream {self.stream} could not be checked "
                                         f"at {self.target.url}: "
                                         f"{exc.__class__.__name__} {exc}".rstrip()) from None
            self._stream_ok = True
        return self._nc, self._js

    async def _on_ack(self, msg: Msg) -> None:
        fut = self._waiting.pop(msg.subject, None)
        if fut is None or fut.done():
            return  # an acknowledgement that arrived after its batch gave up
        if msg.headers and msg.headers.get("Status") == "503":
            fut.set_result({"no_stream": True})  # no responders: no stream for the subject
            return
        try:
            doc = json.loads(msg.data)
        except ValueError:
            doc = {"error": {"description": "unreadable acknowledgement"}}
        fut.set_result(doc if isinstance(doc, dict) else {"error": {"description": "?"}})

    async def _deliver(self, events: Sequence[OutcomeEvent],
                       encoded: Sequence[bytes] | None) -> None:
        nc, _ = await self._client()
        limit = nc.max_payload
        bodies: list[tuple[str, bytes, bool]] = []
        too_large: list[str] = []
        for i, ev in enumerate(events):
            body = encode_outcome(ev) if encoded is None else encoded[i]
            if len(body) <= limit - 512:
                bodies.append((ev.event_id, body, False))
                continue
            # over the server's limit: compressed (outcome_encoding), which event JSON
            # nearly always fits
            packed = deflate_outcome(body)
            if len(packed) <= limit - 512:
                bodies.append((ev.event_id, packed, True))
                continue
            # refused for good (the server will not take it however often it is
            # tried), but only after the rest of the batch is acknowledged: the relay
            # clears a rejected batch, and one that failed it retries first in line,
            # so an error here at once would hold back every later event for ever
            too_large.append(f"outcome event {ev.event_id} is {len(body)} bytes "
                             f"({len(packed)} compressed), more than the NATS server's "
                             f"max_payload ({limit}); raise max_payload in its configuration")
        if bodies:
            await self._publish(nc, bodies)
        if too_large:
            raise EventRejectedError(too_large[0] + (
                f" ({len(too_large)} such events)" if len(too_large) > 1 else ""))

    async def _publish(self, nc: NatsClient,
                       bodies: Sequence[tuple[str, bytes, bool]]) -> None:
        """Publish (event id, encoding, compressed) triples; return once JetStream
        acknowledged each."""
        # Every publish in flight at once, each with its own reply subject on this
        # connection's inbox; the acknowledgements come back to _on_ack.  (Cheaper per
        # event than a request each, and unlike nats-py's publish_async it also resolves
        # a publish the stream refused with a 503, such as "maximum bytes exceeded".)
        loop = asyncio.get_running_loop()
        self._seq += 1
        futures: list[asyncio.Future[dict[str, Any]]] = []
        replies: list[str] = []
        try:
            for i, (event_id, body, packed) in enumerate(bodies):
                reply = f"{self._inbox}.{self._seq}x{i}"
                fut: asyncio.Future[dict[str, Any]] = loop.create_future()
                self._waiting[reply] = fut
                futures.append(fut)
                replies.append(reply)
                headers = {"Nats-Msg-Id": event_id, "Nats-Expected-Stream": self.stream}
                if packed:
                    headers[ENCODING_HEADER] = ZLIB
                await nc.publish(self.subject, body, reply=reply, headers=headers)
            done, pending = await asyncio.wait(futures, timeout=self.timeout)
        except (nats.errors.Error, OSError) as exc:
            raise EventDeliveryError(f"JetStream publish to {self.target.url} failed: "
                                     f"{exc.__class__.__name__} {exc}".rstrip()) from None
        finally:
            for reply in replies:
                self._waiting.pop(reply, None)
        answers = [f.result() for f in done]
        refused = [a for a in answers if "error" in a or a.get("no_stream")]
        acked = len(answers) - len(refused)
        if any(a.get("no_stream") for a in refused):
            self._stream_ok = False  # check (and recreate) the stream on the next call
            raise EventDeliveryError(
                f"no JetStream stream stores {self.subject!r} at {self.target.url} (the "
                "server is still loading it after a restart, or it was deleted); it is "
                "checked and recreated on the next attempt")
        errors = [a["error"] for a in refused if isinstance(a.get("error"), dict)]
        full = [e for e in errors if e.get("err_code") == 10077]
        if full:
            raise EventDeliveryError(
                f"JetStream stream {self.stream} is full ({full[0].get('description')}): "
                f"ingesters are behind or down; {acked} of {len(futures)} event(s) accepted")
        if errors:
            raise EventDeliveryError(
                f"JetStream refused an outcome event at {self.target.url}: "
                f"{errors[0].get('description', 'no reason given')} "
                f"(code {errors[0].get('err_code', errors[0].get('code', '?'))})")
        if pending:
            for f in pending:
                f.cancel()
            raise EventDeliveryError(
                f"JetStream at {self.target.url} acknowledged {acked} of {len(futures)} "
                f"event(s) within {self.timeout:g} s (server down, restarting or overloaded); "
                "the relay retries the batch (duplicates are dropped by message id)")

    def close(self) -> None:
        """Disconnect (the relay has stopped calling :meth:`deliver`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._nc is not None:
                nc = self._nc
                with contextlib.suppress(Exception):
                    self._loop.run(nc.close(), 5.0)
            self._loop.stop()

