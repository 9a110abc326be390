"""A monitor that trickles its answer cannot hold the agent's upgrade check.

httpx's timeout bounds each read, not the body: a peer at the monitor's address that
sent a byte every few seconds held ``AgentUpgrader.run_check`` (and the daemon, which
checks between cycles, so every later attestation) for as long as it kept sending.  The
offer now has a deadline of ``BODY_DEADLINE_FACTOR`` x ``timeout`` in all, the wheel that
plus its signed size at ``MIN_DOWNLOAD_RATE`` (found in review).

A real TCP server on loopback that answers 200 with headers at once, then one byte of
body every 0.1 s for up to 20 s; the agent's timeout is 0.5 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bwtrickle import Trickler

from bootwatch.agent.transport import BODY_DEADLINE_FACTOR
from bootwatch.agent.upgrade import AgentUpgrader, OutcomeKind, UpgradeConfig


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    t = Trickler()
    try:
        yield t
    finally:
        t.close()


def test_a_trickled_offer_is_given_up_at_its_deadline(
        tmp_path: Path, trickler: Trickler, release_key: Any) -> None:
    config = UpgradeConfig(
        monitor_url=f"http://127.0.0.1:{trickler.port}",
        release_public_keys=(release_key.public_pem,), vm_id="vm-1",
        install_root=tmp_path / "root", state_dir=tmp_path / "state", timeout=0.5)
    outcome = AgentUpgrader(config, running_version="0.1.0").run_check(apply=True)
    assert outcome.kind is OutcomeKind.ERROR
    allowed = BODY_DEADLINE_FACTOR * 0.5
    assert f"the offer took longer than {allowed:g} s in all" in outcome.message
    # given up well before the trickle's 20 s end (bytes sent, not a clock, say so)
    assert trickler.sent < 150


def test_a_trickled_wheel_is_given_up_at_its_deadline(
        tmp_path: Path, release_key: Any, sign: Any, serve: Any) -> None:
    import asyncio

    from fastapi import FastAPI, Response
    from fastapi.responses import StreamingResponse

    from bootwatch.agent.upgrade import switch_current

    wheel = tmp_path / "bootwatch-0.2.0-py3-none-any.whl"
    wheel.write_bytes(b"w" * 200)
    offer = sign(wheel, "0.2.0", release_key)
    sent = [0]
    app = FastAPI()

    @app.get("/api/v1/agent/releases/offer")
    def get_offer() -> Response:
        return Response(offer, media_type="application/json")

    @app.get("/api/v1/agent/releases/{version}/wheel")
    def get_wheel(version: str) -> StreamingResponse:
        async def trickle() -> Any:
            for _ in range(200):  # 20 s in all, unless the agent gives up
                await asyncio.sleep(0.1)
                sent[0] += 1
                yield b"w"
        return StreamingResponse(trickle(), media_type="application/octet-stream")

    root = tmp_path / "root"
    (root / "versions" / "0.1.0").mkdir(parents=True)
    switch_current(root, root / "versions" / "0.1.0")
    with serve(app) as server:
        config = UpgradeConfig(
            monitor_url=server.url, release_public_keys=(release_key.public_pem,),
            vm_id="vm-1", install_root=root, state_dir=tmp_path / "state", timeout=0.5)
        upgrader = AgentUpgrader(config, running_version="0.1.0",
                                 running_prefix=root / "current")
        beats = [0]

        def keepalive() -> None:
            beats[0] += 1

        # as the daemon asks: its keep-alive is called while the download goes on (the
        # systemd watchdog must not take a slow download for a hang)
        assert upgrader.maybe_upgrade(keepalive=keepalive) is False
    outcome = upgrader.last_outcome
    assert outcome is not None and outcome.kind is OutcomeKind.ERROR, outcome
    assert beats[0] >= 5
    assert "the wheel took longer than" in outcome.message
    assert sent[0] < 150
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["0.1.0"]


def test_a_trickled_status_line_and_headers_are_cut_off_too(
        tmp_path: Path, release_key: Any) -> None:
    """httpx's timeout bounds each read: a peer sending its headers a byte at a time held
    the check for ever, since the body deadline starts after the headers (found in
    review).  bootwatch.httpdeadline cuts the whole request off."""
    trickler = Trickler(head=True)
    try:
        config = UpgradeConfig(
            monitor_url=f"http://127.0.0.1:{trickler.port}",
            release_public_keys=(release_key.public_pem,), vm_id="vm-1",
            install_root=tmp_path / "root", state_dir=tmp_path / "state", timeout=0.5)
        outcome = AgentUpgrader(config, running_version="0.1.0").run_check(apply=True)
    finally:
        trickler.close()
    assert outcome.kind is OutcomeKind.ERROR
    whole = (BODY_DEADLINE_FACTOR + 1) * 0.5
    assert f"no complete answer within {whole:g} s" in outcome.message
    assert trickler.sent < 150


def test_the_agents_transport_cuts_off_trickled_headers() -> None:
    from bootwatch.agent.transport import Transport
    from bootwatch.errors import TransportError

    trickler = Trickler(head=True)
    t = Transport(f"http://127.0.0.1:{trickler.port}", timeout=0.5)
    try:
        with pytest.raises(TransportError) as caught:
            t.send("GET", "/.well-known/openid-configuration")
    finally:
        t.close()
        trickler.close()
    assert caught.value.step == "timeout"
    assert "no complete answer within 2.5 s" in str(caught.value)
    assert trickler.sent < 150


def test_a_cut_request_still_names_the_hop_it_stalled_at() -> None:
    """A proxy answering CONNECT a byte at a time: the cut names proxy_connect, as a
    proxy that does not answer at all does (found in review: every cut said timeout)."""
    from bootwatch.agent.transport import Transport
    from bootwatch.errors import TransportError

    proxy = Trickler(head=True)
    t = Transport("https://attest.example:443", proxy=f"http://127.0.0.1:{proxy.port}",
                  timeout=0.5)
    try:
        with pytest.raises(TransportError) as caught:
            t.send("GET", "/.well-known/openid-configuration")
    finally:
        t.close()
        proxy.close()
    assert caught.value.step == "proxy_connect", caught.value
    assert "within 2.5 s" in str(caught.value)


def test_a_tls_socket_is_cut_below_its_tls_layer() -> None:
    """SSLSocket.shutdown drops the TLS layer first: a send racing it went out in clear,
    and a read after it took TLS records for data (found in review).  The watch shuts
    the socket down underneath, the TLS layer left in place."""
    import socket
    import ssl
    import tempfile
    import threading

    from bwservers import bound_socket

    from bootwatch.httpdeadline import SocketWatch
    from bootwatch.service.tls import ensure_dev_certificate

    files = ensure_dev_certificate(Path(tempfile.mkdtemp()), ("127.0.0.1",))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(files.cert), str(files.key))
    listener = bound_socket()
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    threading.Thread(target=serve, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(files.cert))
    raw = socket.create_connection(("127.0.0.1", listener.getsockname()[1]))
    with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        SocketWatch._shut(tls)
        assert tls._sslobj is not None  # the TLS layer is still there: no plaintext path
        with pytest.raises(OSError):
            tls.sendall(b"secret")
    listener.close()
