"""The agent's HTTP answers are read within MAX_RESPONSE_BYTES as they arrive: a server
sending an endless body, or a small gzip body that inflates past the limit, is refused
after the limit, not after the agent has held all of it (it read the whole body first)."""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "40")
            self.end_headers()
            try:
                for _ in range(40):  # a byte every 0.2 s: each read well within the timeout
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        elif self.path.startswith("/attest/AzureGuest"):
            body = b"<html><body>Access to this site is blocked by policy</body></html>"
            self.send_response(200)  # a proxy's block page answering for the provider
            self.send_header("Content-Type", "text/html")
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


    do_POST = do_GET  # noqa: N815 - BaseHTTPRequestHandler's naming


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


def test_a_trickled_body_is_bounded_in_time_in_all(server: _Server) -> None:
    """Found in review: httpx's timeout bounds each read, not the body, so a peer
    sending a byte now and then held a cycle as long as it liked (40 bytes 0.2 s apart
    took 8 s with a 0.5 s timeout; at the 4 MiB limit, weeks)."""
    t = Transport(f"http://127.0.0.1:{server.server_address[1]}", timeout=0.5)
    start = time.monotonic()
    with pytest.raises(TransportError) as err:
        t.send("GET", "/trickle")
    t.close()
    assert time.monotonic() - start < 5
    assert err.value.step == "timeout" and "took longer than 2 s in all" in str(err.value)


def test_a_200_that_is_no_sealed_token_names_the_url_and_the_http_hop(
        server: _Server) -> None:
    """Found in review: a proxy's block page or a captive portal answering 200 was a
    ProtocolError the cycle reported as a local platform error, naming no URL."""
    from bootwatch.agent.client import AttestationClient

    url = f"http://127.0.0.1:{server.server_address[1]}"
    with AttestationClient(url, timeout=5) as client, pytest.raises(TransportError) as err:
        client.attest_azure_guest(b"{}")
    assert err.value.step == "http_status" and err.value.target == url
    assert "/attest/AzureGuest" in str(err.value) and "without a sealed token" in str(err.value)


_DEFAULT_TRUST_PROBE = """
import sys
from bootwatch.agent.transport import Transport
t = Transport(sys.argv[1], timeout=10)
try:
    print("answered", t.send("GET", "/").status_code)
except Exception as exc:
    print("refused", exc)
"""


def test_with_no_ca_the_agent_trusts_the_system_store(tmp_path: Path) -> None:
    """Found in review: with no ``ca`` the agent used certifi's bundle, not the system's
    trust store that docs/agent.md, libcurl and netcheck use, so a proxy's or private CA
    installed in the OS store failed every attestation while netcheck said "verified".
    ``SSL_CERT_FILE`` stands in for the OS store (OpenSSL's default paths honour it)."""
    from bootwatch.service.tls import ensure_dev_certificate

    tls = ensure_dev_certificate(tmp_path)  # a private CA and a 127.0.0.1 certificate
    assert tls.ca is not None
    srv = _Server(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls.cert, tls.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "SSL_CERT_FILE": str(tls.ca)}
        env.pop("SSL_CERT_DIR", None)
        out = subprocess.run(
            [sys.executable, "-c", _DEFAULT_TRUST_PROBE,
             f"https://127.0.0.1:{srv.server_address[1]}"],
            capture_output=True, text=True, env=env, timeout=60, check=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert out.stdout.strip() == "answered 200", out.stdout + out.stderr[-1500:]


class _Stall:
    """A loopback TCP listener that accepts and then, per ``answer_connect``, says 200 to
    a proxy CONNECT or nothing at all, and never speaks TLS."""

    def __init__(self, *, answer_connect: bool) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answer_connect = answer_connect
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.answer_connect:
                with contextlib.suppress(OSError):
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(4096) or b"\r\n\r\n"
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize(("proxy", "step", "says"), [
    (None, "tls", "TCP connected to https://127.0.0.1:{port}, but the TLS handshake"),
    ("tunnel", "tls", "tunnelled to https://attest.example:443, but the TLS handshake"),
    ("silent", "proxy_connect", "accepted the TCP connection but did not answer CONNECT"),
])
def test_a_timeout_is_named_by_how_far_the_connection_got(
        proxy: str | None, step: str, says: str) -> None:
    """Found in review: httpcore raises ConnectTimeout for a stalled TLS handshake too,
    and every one was reported as "no TCP connection" (to the proxy, with one), so the
    monitor advised network rules for what a TLS-inspecting middlebox did; a proxy that
    never answered CONNECT came out as an unanswered GET."""
    server = _Stall(answer_connect=proxy == "tunnel")
    try:
        if proxy is None:
            t = Transport(f"https://127.0.0.1:{server.port}", timeout=0.5)
        else:
            t = Transport("https://attest.example:443", timeout=0.5,
                          proxy=f"http://127.0.0.1:{server.port}")
        with pytest.raises(TransportError) as err:
            t.send("GET", "/")
        t.close()
    finally:
        server.close()
    assert err.value.step == step and says.format(port=server.port) in str(err.value), \
        str(err.value)


def test_an_ipv6_origin_is_a_url() -> None:
    """Found in review: the origin (the failed target a report names) of an IPv6
    literal was ``https://::1:443``, which no URL parser reads back."""
    t = Transport("https://[::1]:8443/", timeout=1)
    t.close()
    assert t.origin == "https://[::1]:8443"


def test_the_daemons_tls_contexts_are_its_own_reused_and_reread(tmp_path: Path) -> None:
    """The contexts were a module-level table every importer shared (process-wide
    state); now each daemon owns a bounded one: one context per version of a file."""
    from bootwatch.agent.transport import TlsContexts
    from bootwatch.service.tls import ensure_dev_certificate

    tls = ensure_dev_certificate(tmp_path)
    assert tls.ca is not None
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(tls.ca.read_bytes())
    mine, other = TlsContexts(), TlsContexts()
    first = mine.get(bundle)
    assert mine.get(bundle) is first and other.get(bundle) is not first
    bundle.write_bytes(tls.ca.read_bytes() + b"\n")  # replaced in place
    assert mine.get(bundle) is not first
    bundle.unlink()
    with pytest.raises(OSError):
        mine.get(bundle)
