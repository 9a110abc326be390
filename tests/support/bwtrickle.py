"""A peer that answers slowly on purpose: a status line, headers or a body one byte at a
time, each byte well within any read timeout (tests of whole-request deadlines)."""

from __future__ import annotations

import socket
import threading

__all__ = ["Trickler"]


class Trickler:
    """Answers every request with 200 and a body sent one byte per ``gap`` seconds."""

    def __init__(self, gap: float = 0.1, lasts: float = 20.0, *, head: bool = False) -> None:
        #: trickle the status line and headers too, not only the body
        self.head = head
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.gap, self.lasts = gap, lasts
        self.stop = threading.Event()
        self.sent = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            if self.head:  # one byte of a never-ending header at a time
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: ")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\n\r\n{")
            for _ in range(int(self.lasts / self.gap)):
                if self.stop.wait(self.gap):
                    return
                try:
                    conn.sendall(b"a" if self.head else b" ")
                except OSError:
                    return  # the agent gave up and closed
                self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
