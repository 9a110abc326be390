"""Provider changes between replicas: PostgreSQL ``LISTEN/NOTIFY``.

Every process caches provider state (policies, signers, signing keys, the
enrolment CA and its revocations) for ``Settings.cache_ttl_seconds``.  A write
through one process clears its own cache at once; :class:`ChangeFeed` tells the
others: after the write commits, :meth:`ChangeFeed.announce` sends
``NOTIFY`` on the deployment's channel with the provider's name, and every
process's listener thread (one PostgreSQL connection ``LISTEN``ing) clears its
caches for that provider.  The bound a change takes to reach every replica is
the notification's delivery (milliseconds on a LAN) while listeners are
connected, and ``cache_ttl_seconds`` at worst: each time the listener's
``LISTEN`` starts (at start, and after a lost connection) it clears every cache
(it may have missed notifications), and the TTL covers the time in between.

On SQLite there is one machine and nothing to announce: worker processes of one
``service run`` see each other's writes within ``cache_ttl_seconds``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bootwatch.service.logs import get_logger

__all__ = ["ChangeFeed", "channel_name"]

#: longest wait of the listener between checks for its stop flag (seconds)
POLL = 1.0
#: delay before a lost listener connection is opened again (seconds)
RECONNECT = 1.0

Listener = Callable[[str | None], None]


def channel_name(schema: str) -> str:
    """One channel per deployment (its schema), so deployments sharing a database
    never clear each other's caches."""
    suffix = re.sub(r"[^a-z0-9_]", "_", (schema or "public").lower())
    return f"bootwatch_changes_{suffix}"[:63]


class ChangeFeed:
    """Announces provider changes and listens for other processes' announcements."""

    def __init__(self, engine: Engine, *, schema: str = "") -> None:
        self._engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self.channel = channel_name(schema)
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, listener: Listener) -> None:
        """``listener(provider)`` on each change; ``listener(None)``: anything may have
        changed (the feed was deaf for a while)."""
        self._listeners.append(listener)

    def announce(self, provider: str) -> None:
        """Tell every process that ``provider`` changed (after the write committed)."""
        if not self.enabled:
            return
        try:
            with self._engine.connect() as conn:
                conn.execute(select(func.pg_notify(self.channel, provider[:200])))
                conn.commit()
        except Exception as exc:  # the TTL still bounds how stale other replicas are
            get_logger().warning("provider change not announced",
                                 extra={"provider": provider, "reason": str(exc)})

    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="bootwatch-changes",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=POLL * 3)
            self._thread = None

    def _notify(self, provider: str | None) -> None:
        for listener in self._listeners:
            try:
                listener(provider)
            except Exception as exc:  # one bad listener must not deafen the others
                get_logger().error("provider change listener failed",
                                   extra={"reason": repr(exc)})

    def _conninfo(self) -> str:
        # the engine's URL for libpq (psycopg), credentials included, never logged
        return self._engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                # a connect that cannot hang, and TCP keepalives: a connection dropped
                # silently (a NAT or firewall forgetting it) is noticed within about a
                # minute and reconnected, instead of leaving this replica deaf
                with psycopg.connect(self._conninfo(), autocommit=True, connect_timeout=10,
                                     keepalives=1, keepalives_idle=30,
                                     keepalives_interval=10,
                                     keepalives_count=3) as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    # notifications before this LISTEN were missed: after a lost
                    # connection, and at start too (requests are served, and state
                    # cached, from before the listener's first connection is up)
                    self._notify(None)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=POLL):
                            self._notify(note.payload or None)
            except Exception as exc:  # reconnect; the TTL bounds staleness meanwhile
                if self._stop.is_set():
                    return
                get_logger().warning("provider change listener lost its connection",
                                     extra={"reason": str(exc)})
                time.sleep(RECONNECT)
