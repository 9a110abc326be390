"""A deadline for a whole HTTP request, headers included.

Why: httpx's timeouts bound each read, not a request, so a peer (or whatever answers at
its address) that sends its status line and headers a byte at a time, each within the
read timeout, holds the request for as long as it likes; the body limits of
:mod:`bootwatch.httpread` and the agent's transport only start once the headers are in.
That held the agent daemon's upgrade check, the service's OpenID key fetch and the
monitor's webhook round (found in review).

How: a :class:`SocketWatch` belongs to one ``httpx.Client``.  Its :meth:`~SocketWatch.trace`
is passed as the request's ``trace`` extension and remembers every socket the client
opens (httpcore reports each TCP connect, to a proxy too); :meth:`~SocketWatch.bound`
arms a timer for one request that, when it fires, shuts those sockets down, which ends any
read blocked on them at once.  The caller then sees an httpx transport error and asks
:attr:`Bound.passed` whether it was the deadline.  All of the client's sockets go, not
only the request's (a pooled connection is not traced again when reused): a client is
used by one request at a time here, and a later request simply connects again.  A watch
keeps one armed deadline: it belongs to a client used by one thread at a time.  A TCP
connect and a TLS handshake are bounded by the socket's own timeout (CPython times a
whole handshake out), not by the watch.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Bound", "SocketWatch"]

#: trace events whose return value is a network stream (a socket, or a TLS one over it)
_CONNECTED = ("connect_tcp.complete", "connect_unix_socket.complete", "start_tls.complete")


class Bound:
    """One armed deadline: ``passed`` once it fired."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.passed = False


class SocketWatch:
    """The sockets of one httpx client, so that a request can be cut off at a deadline."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._armed: Bound | None = None

    def trace(self, name: str, info: Mapping[str, Any]) -> None:
        """httpcore's trace callback (``extensions={"trace": watch.trace}``): every
        connect and TLS start (a TLS socket takes over the TCP socket's descriptor, so
        the TCP socket object no longer reaches it), to the peer or to a proxy."""
        if not name.endswith(_CONNECTED):
            return
        stream = info.get("return_value")
        get = getattr(stream, "get_extra_info", None)
        sock = get("socket") if callable(get) else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.add(sock)
            late = self._armed is not None and self._armed.passed
        if late:  # connected just after the deadline fired
            self._shut(sock)

    @contextlib.contextmanager
    def bound(self, seconds: float) -> Iterator[Bound]:
        """Within this block, the client's sockets are shut down ``seconds`` from now."""
        armed = Bound(seconds)
        timer = threading.Timer(seconds, self._fire, args=(armed,))
        timer.daemon = True
        with self._lock:
            self._armed = armed
        timer.start()
        try:
            yield armed
        finally:
            timer.cancel()
            with self._lock:
                if self._armed is armed:
                    self._armed = None

    def _fire(self, armed: Bound) -> None:
        with self._lock:
            if self._armed is not armed:
                return  # the block ended as the timer fired
            armed.passed = True
            # under the lock: shut down after it was released, a socket could already be
            # the next request's, reused from the pool (found in review)
            for sock in list(self._sockets):
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # the plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown drops its
        # TLS layer first, and a send racing it went out in clear (or a read took TLS
        # records for data) (found in review)
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
