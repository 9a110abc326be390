"""Where the service sends each attestation's outcome event: the event sink.

:class:`EventSink` is the interface; the service holds at most one, chosen by
settings at the edge: the embedded server passes the monitor's in-process sink
(``monitor/sink.py``), ``--events https://monitor`` builds :class:`HttpEventSink`,
``--events nats://host:port`` the JetStream sink (``service/events_nats.py``).

A sink never sees an event before its attestation record is committed: the
event relay (``service/outbox.py``) calls :meth:`EventSink.deliver` with
committed events and clears them from the outbox only when it returns.  So
``deliver`` must return only once the other side holds the events durably,
and raise :class:`~bootwatch.errors.EventDeliveryError` otherwise (the relay
retries with the same event ids; receivers de-duplicate by ``event_id``), or
:class:`~bootwatch.errors.EventRejectedError` when retrying cannot help.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urlsplit

import httpx

from bootwatch.errors import ConfigError, EventDeliveryError, EventRejectedError
from bootwatch.httpdeadline import SocketWatch
from bootwatch.protocol.outcome import MAX_OUTCOME_BYTES, OutcomeEvent, encode_outcome
from bootwatch.tlsverify import tls_verify

if TYPE_CHECKING:
    from bootwatch.service.settings import Settings

__all__ = ["MAX_POST_BYTES", "EventSink", "HttpEventSink", "events_url", "is_jetstream_url",
           "sink_from_settings"]

#: encoded events per request of the HTTP sink at most (each event is at most
#: MAX_OUTCOME_BYTES, so a request always has room for one)
MAX_POST_BYTES: Final = 2 * MAX_OUTCOME_BYTES


class EventSink(Protocol):
    """Takes batches of committed outcome events (see the module docstring)."""

    def deliver(self, events: Sequence[OutcomeEvent],
                bodies: Sequence[bytes] | None = None) -> None:
        """Deliver ``events``; ``bodies``, when given, are their encodings
        (:func:`~bootwatch.protocol.outcome.encode_outcome`, in the same order): the relay
        has them from the outbox, and a sink that sends bytes need not encode again."""
        ...

    def close(self) -> None: ...


class HttpEventSink:
    """Posts batches to ``<monitor>/api/v1/outcomes`` with the monitor admin token
    (``BOOTWATCH_MONITOR_TOKEN``); the monitor answers 202 once its transaction
    holding them committed."""

    def __init__(self, monitor_url: str, *, token: str, ca: str = "",
                 timeout: float = 10.0) -> None:
        self.url = monitor_url.rstrip("/") + "/api/v1/outcomes"
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(timeout=timeout, verify=tls_verify(ca))
        #: each post is cut off after 3 x timeout in all (httpx bounds each read: a
        #: monitor, or whatever answers at its address, trickling its answer held the
        #: relay, and every outcome behind it, for ever)
        self._watch = SocketWatch()
        self._whole = 3 * timeout

    def deliver(self, events: Sequence[OutcomeEvent],
                bodies: Sequence[bytes] | None = None) -> None:
        if bodies is None:
            bodies = [encode_outcome(e) for e in events]
        # one request per MAX_POST_BYTES of events (the monitor reads at most four times
        # MAX_OUTCOME_BYTES per request and would refuse a larger batch, which the relay
        # would then drop as rejected); a retry resends all, which the monitor dedupes
        chunks: list[list[bytes]] = []
        chunk: list[bytes] = []
        size = 0
        for body in bodies:
            if chunk and size + len(body) + 1 > MAX_POST_BYTES:
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(body)
            size += len(body) + 1
        if chunk:
            chunks.append(chunk)
        # a request refused for good does not end the batch: the relay clears the whole
        # batch on EventRejectedError, so the other requests must have been delivered by
        # the time it is raised (a failure that a retry may cure is raised at once: the
        # relay then retries the whole batch)
        rejected: EventRejectedError | None = None
        for chunk in chunks:
            refusal = self._post_isolating(chunk)  # every chunk is posted
            rejected = rejected or refusal
        if rejected is not None:
            raise rejected

    def _post_isolating(self, bodies: list[bytes]) -> EventRejectedError | None:
        """Post ``bodies``; when the monitor refuses the request for good (it stores
        nothing of a request with one bad event), post each half again, down to the
        events refused alone, and return the first refusal.  Why: the relay drops a
        refused batch, so one event the monitor cannot read lost every other event of
        its request (found in review)."""
        try:
            self._post(bodies)
            return None
        except EventRejectedError as exc:
            if len(bodies) == 1:
                return exc
        half = len(bodies) // 2
        first = self._post_isolating(bodies[:half])
        second = self._post_isolating(bodies[half:])
        return first or second

    def _post(self, bodies: list[bytes]) -> None:
        # the request body is {"events": [...]} with each event's encoding as it is
        content = b'{"events":[' + b",".join(bodies) + b"]}"
        with self._watch.bound(self._whole) as bound:
            try:
                with self._client.stream(
                        "POST", self.url, content=content,
                        headers={**self._headers, "Content-Type": "application/json"},
                        extensions={"trace": self._watch.trace}) as resp:
                    status = resp.status_code
                    # what the detail shows, no more (the answer is not otherwise read)
                    head = b"" if status == 202 else _first_bytes(resp, 300)
            except httpx.HTTPError as exc:
                why = (f"no answer within {self._whole:g} s" if bound.passed
                       else f"{exc.__class__.__name__}: {exc}")
                raise EventDeliveryError(f"monitor {self.url} unreachable: {why}") from exc
        if status == 202:
            return
        text = head.decode("utf-8", "replace")
        detail = f"monitor {self.url} answered HTTP {status}: {text}"
        if status in (400, 413, 422):
            raise EventRejectedError(detail)
        if status in (401, 403):
            raise EventDeliveryError(detail + " (check BOOTWATCH_MONITOR_TOKEN: an admin "
                                     "token of the monitor)")
        raise EventDeliveryError(detail)

    def close(self) -> None:
        self._client.close()


def _first_bytes(resp: httpx.Response, n: int) -> bytes:
    """Up to ``n`` bytes of an answer's body, the rest left unread."""
    out = b""
    for chunk in resp.iter_bytes():
        out += chunk
        if len(out) >= n:
            break
    return out[:n]


def events_url(settings: Settings) -> str:
    """The configured events URL (``--events``, or the older ``--monitor-url``),
    checked: an unknown scheme stops start-up rather than losing events."""
    url = settings.events_url or settings.monitor_url
    if settings.events_url and settings.monitor_url and settings.events_url != settings.monitor_url:
        raise ConfigError("--events and --monitor-url disagree: give one of them")
    if url and urlsplit(url).scheme not in ("http", "https", "nats", "tls"):
        raise ConfigError(f"--events {url!r}: expected nats://HOST:PORT or an "
                          "http(s):// monitor URL")
    return url


def is_jetstream_url(url: str) -> bool:
    """Whether ``--events`` names NATS JetStream (rather than an HTTP monitor)."""
    return urlsplit(url).scheme in ("nats", "tls")


def sink_from_settings(settings: Settings) -> EventSink | None:
    """The sink ``--events`` names (None without one)."""
    url = events_url(settings)
    if not url:
        return None
    if is_jetstream_url(url):
        from bootwatch.service.events_nats import JetStreamSink

        return JetStreamSink(url, stream=settings.events_stream,
                             subject=settings.events_subject)
    return HttpEventSink(url, token=settings.monitor_token, ca=settings.monitor_ca)
