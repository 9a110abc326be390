"""Webhook delivery from the outbox: at least once, signed, retried with backoff.

Alert changes write a row per receiver into ``monitor_webhook_deliveries`` in
the same transaction as the change (:mod:`bootwatch.monitor.core`); this
dispatcher posts due rows and marks them delivered on a 2xx.  Each POST
carries ``X-Bootwatch-Signature: sha256=<hex HMAC-SHA256 of the body>`` and
``X-Bootwatch-Delivery: <id>`` (the same id on every retry, for the
receiver's de-duplication).  A failure is retried after 2, 4, 8 ... seconds,
at most 10 minutes apart, for up to :data:`MAX_ATTEMPTS` attempts (about three
days: a receiver down over a long weekend still gets every delivery); a delivery
given up is logged with its id and counted (``abandoned``).  A receiver's answer
is judged by its status alone: its body is never read (a receiver cannot make the
dispatcher hold or wait for a large or trickling body).  Each round takes each
receiver's oldest due deliveries (a backlog of one never crowds out another),
configured receivers first; a receiver that fails is not tried again in the same
round.  Deliveries made or given up are deleted
after :data:`KEEP` (30 days).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import time
from datetime import timedelta
from itertools import zip_longest

import httpx
from sqlalchemy import delete, func, or_, select

from bootwatch.errors import BootwatchError
from bootwatch.httpdeadline import SocketWatch
from bootwatch.monitor.core import Monitor
from bootwatch.monitor.db import utcnow
from bootwatch.monitor.models import WebhookDeliveryRow
from bootwatch.service.logs import get_logger
from bootwatch.tlsverify import tls_verify

__all__ = ["KEEP", "MAX_ATTEMPTS", "WebhookDispatcher", "sign_body"]

#: deliveries made or given up are deleted this long after they were written
KEEP = timedelta(days=30)
#: how often the dispatcher prunes (seconds)
PRUNE_EVERY = 3600.0
#: 2 + 4 + ... + 512 s, then every 10 minutes: about 72 hours in all
MAX_ATTEMPTS = 440
_MAX_DELAY = 600.0


def _origin(url: str) -> str:
    """A receiver's scheme, host and port only: its path or query may carry a token."""
    with contextlib.suppress(httpx.InvalidURL, ValueError):
        u = httpx.URL(url)
        return f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")
    return "(unparseable URL)"


def sign_body(secret: str, body: bytes) -> str:
    """The ``X-Bootwatch-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDispatcher:
    def __init__(self, monitor: Monitor, *, poll: float = 0.5, timeout: float = 5.0,
                 ca: str = "") -> None:
        self.monitor = monitor
        self.poll = poll
        self._client = httpx.Client(timeout=timeout, verify=tls_verify(ca))
        #: the client's sockets: a delivery is cut off after 2 x timeout in all (a receiver
        #: trickling its answer's headers held the round for ever; found in review)
        self._watch = SocketWatch()
        self._whole = 2 * timeout
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bootwatch-webhooks",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._client.close()

    def kick(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        next_prune = 0.0
        while not self._stop.is_set():
            # the database or a receiver is away: the next round tries again
            with contextlib.suppress(BootwatchError):
                self.deliver_due()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    self.prune()
            self._wake.wait(self.poll)
            self._wake.clear()

    def prune(self, keep: timedelta = KEEP) -> int:
        """Delete deliveries made or given up more than ``keep`` ago (the outbox would
        grow for ever, and every round's query would wade through it); returns how
        many.  A receiver's de-duplication needs ids for far less than ``keep``."""
        cutoff = utcnow() - keep
        with self.monitor.write_tx() as session:
            gone = session.execute(delete(WebhookDeliveryRow).where(
                WebhookDeliveryRow.created_at < cutoff,
                or_(WebhookDeliveryRow.delivered_at.is_not(None),
                    WebhookDeliveryRow.attempts >= MAX_ATTEMPTS)))
        return int(getattr(gone, "rowcount", 0) or 0)

    def deliver_due(self, limit: int = 100) -> int:
        """Post due deliveries, up to ``limit`` per receiver, oldest first; returns how
        many were delivered.

        Why per receiver: the round used to take the ``limit`` oldest due rows across
        all receivers, and a receiver that was down long enough to have that many waiting
        filled every round on its own: after its one failed attempt the rest were skipped
        and the other receivers' deliveries never entered a round (found in review).
        One windowed query picks each receiver's oldest; the configured receivers
        (``--webhook``, in their order) come first and their rows are interleaved, then
        receivers no longer configured (rows written before a URL changed), so neither a
        backlog nor a stale receiver that hangs holds a configured one's delivery back."""
        now = utcnow()
        rank = func.row_number().over(
            partition_by=WebhookDeliveryRow.url,
            order_by=(WebhookDeliveryRow.created_at, WebhookDeliveryRow.id)).label("rank")
        due = select(WebhookDeliveryRow.id, WebhookDeliveryRow.url, WebhookDeliveryRow.body,
                     rank).where(
            WebhookDeliveryRow.delivered_at.is_(None),
            WebhookDeliveryRow.attempts < MAX_ATTEMPTS,
            WebhookDeliveryRow.next_attempt_at <= now,
        ).subquery()
        queues: dict[str, list[tuple[str, str, str]]] = {}
        with self.monitor.read() as session:
            for delivery_id, url, body in session.execute(
                    select(due.c.id, due.c.url, due.c.body).where(due.c.rank <= limit)
                    .order_by(due.c.url, due.c.rank)):
                queues.setdefault(url, []).append((delivery_id, url, body))
        configured = [u for u in dict.fromkeys(self.monitor.settings.webhooks) if u in queues]
        stale = sorted(set(queues) - set(configured))
        work = [item for rank_items in zip_longest(*(queues[u] for u in configured))
                for item in rank_items if item is not None]
        work += [item for u in stale for item in queues[u]]
        delivered = 0
        secret = self.monitor.settings.webhook_secret
        # a receiver that failed this round is not tried again in it: a dead one gets one
        # attempt a round, not one per waiting delivery, and a receiver that never
        # answers holds the round for one timeout, not for each of its deliveries
        failing: set[str] = set()
        for delivery_id, url, body in work:
            if self._stop.is_set():
                break
            if url in failing:
                continue
            raw = body.encode()
            error = ""
            with self._watch.bound(self._whole) as bound:
                try:
                    with self._client.stream("POST", url, content=raw, headers={
                        "Content-Type": "application/json",
                        "X-Bootwatch-Signature": sign_body(secret, raw),
                        "X-Bootwatch-Delivery": delivery_id,
                        "User-Agent": "bootwatch-monitor",
                    }, extensions={"trace": self._watch.trace}) as resp:  # closed unread
                        status = resp.status_code
                    if not 200 <= status < 300:
                        error = f"HTTP {status}"
                except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                    # InvalidURL is no HTTPError, and an IDNA error is a ValueError: a
                    # stored receiver URL httpx cannot parse (settings refuse such URLs
                    # now; rows stored before stay) escaped this loop and ended the
                    # dispatcher thread; it is this delivery's failure
                    error = (f"no answer within {self._whole:g} s" if bound.passed
                             else f"{exc.__class__.__name__}: {exc}")
            with self.monitor.write_tx() as session:
                row = session.get(WebhookDeliveryRow, delivery_id)
                if row is None:
                    continue
                row.attempts += 1
                if error:
                    failing.add(url)
                    row.last_error = error[:2000]
                    delay = min(_MAX_DELAY, 2.0 ** row.attempts)
                    row.next_attempt_at = utcnow() + timedelta(seconds=delay)
                    self.monitor.metrics.webhook("failed")
                    if row.attempts >= MAX_ATTEMPTS:
                        self.monitor.metrics.webhook("abandoned")
                        get_logger().error("webhook delivery abandoned", extra={
                            "delivery": delivery_id, "receiver": _origin(url),
                            "attempts": row.attempts, "reason": row.last_error})
                else:
                    row.delivered_at = utcnow()
                    row.last_error = ""
                    delivered += 1
                    self.monitor.metrics.webhook("delivered")
        return delivered
