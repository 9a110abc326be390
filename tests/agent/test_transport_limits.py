"""The agent's HTTP answers are read within MAX_RESPONSE_BYTES as they arrive: a server
sending an endless body, or a small gzip body that inflates past the limit, is refused
after the limit, not after the agent has held all of it (it read the whole body first)."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bootwatch.agent.transport import MAX_RESPONSE_BYTES, Transport
from bootwatch.errors import TransportError

CHUNK = b"x" * 65536


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    sent = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                while self.server.sent < 40 * MAX_RESPONSE_BYTES:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                    self.server.sent += len(CHUNK)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the agent hung up: what the test wants
        elif self.path == "/inflates":
            body = gzip.compress(b"\0" * (8 * MAX_RESPONSE_BYTES))
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/declared":
            self.send_response(200)
            self.send_header("Content-Length", str(MAX_RESPONSE_BYTES + 1))
            self.end_headers()
        else:
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _transport(srv: _Server) -> Transport:
    return Transport(f"http://127.0.0.1:{srv.server_address[1]}", timeout=30)


def test_an_endless_body_is_refused_at_the_limit(server: _Server) -> None:
    t = _transport(server)
    try:
        with pytest.raises(TransportError, match="response over"):
            t.send("GET", "/endless")
    finally:
        t.close()
    # the agent hung up soon after the limit (socket buffers allow some slack), not after
    # the 160 MB the server was ready to send
    assert server.sent < 4 * MAX_RESPONSE_BYTES, server.sent


@pytest.mark.parametrize("path", ["/inflates", "/declared"])
def test_a_body_past_the_limit_is_refused(server: _Server, path: str) -> None:
    t = _transport(server)
    try:
        with pytest.raises(TransportError, match="response over"):
            t.send("GET", path)
    finally:
        t.close()


def test_a_small_answer_is_read_whole(server: _Server) -> None:
    t = _transport(server)
    try:
        resp = t.send("GET", "/small")
        assert resp.json() == {"ok": True} and resp.content == b'{"ok": true}'
    finally:
        t.close()
