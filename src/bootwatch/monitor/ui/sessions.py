"""Dashboard sessions: opaque ids mapped to server-side state, in a bounded store.

The cookie carries only a random id (256 bits); the role, the principal name
and the CSRF token live here, so nothing in the cookie can be forged or
replayed into a token.  The store belongs to one dashboard instance (no
process-wide state), holds at most ``max_sessions`` entries (the least
recently used one goes first) and forgets a session after ``idle_seconds``
without use or ``max_age_seconds`` after login, whichever comes first.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["LoginNonces", "SessionStore", "UiSession"]


@dataclass
class UiSession:
    """One signed-in browser.  ``principal`` is what ``changed_by`` fields record."""

    principal: str
    admin: bool
    csrf: str
    created: float
    last_used: float
    #: one-shot messages shown on the next page (post/redirect/get)
    flashes: list[tuple[str, str]] = field(default_factory=list)


class SessionStore:
    """Bounded, expiring map of session id -> :class:`UiSession` (thread-safe)."""

    def __init__(self, *, max_sessions: int = 10_000, idle_seconds: float = 8 * 3600,
                 max_age_seconds: float = 24 * 3600,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._items: OrderedDict[str, UiSession] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def create(self, principal: str, *, admin: bool) -> tuple[str, UiSession]:
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        session = UiSession(principal=principal, admin=admin, csrf=secrets.token_urlsafe(32),
                            created=now, last_used=now)
        with self._lock:
            self._items[sid] = session
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)
        return sid, session

    def get(self, sid: str | None) -> UiSession | None:
        if not sid or len(sid) > 128:
            return None
        now = self._clock()
        with self._lock:
            session = self._items.get(sid)
            if session is None:
                return None
            if (now - session.last_used > self.idle_seconds
                    or now - session.created > self.max_age_seconds):
                del self._items[sid]
                return None
            session.last_used = now
            self._items.move_to_end(sid)
            return session

    def drop(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._items.pop(sid, None)


class LoginNonces:
    """CSRF for the login form, before any session exists.

    ``GET /ui/login`` sets a random nonce cookie and puts ``HMAC(key, nonce)`` in
    the form; the post must bring both.  The key is this instance's, made at start.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def new(self) -> tuple[str, str]:
        nonce = secrets.token_urlsafe(24)
        return nonce, self.token_for(nonce)

    def token_for(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), "sha256").hexdigest()

    def check(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token or len(nonce) > 64 or len(token) > 128:
            return False
        return hmac.compare_digest(self.token_for(nonce), token)
