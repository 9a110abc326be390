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

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootwatch.agent.transport import BODY_DEADLINE_FACTOR
from bootwatch.agent.upgrade import AgentUpgrader, OutcomeKind, UpgradeConfig


class Trickler:
    """Answers every request with 200 and a body sent one byte per ``gap`` seconds."""

    def __init__(self, gap: float = 0.1, lasts: float = 20.0) -> None:
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
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\n\r\n{")
            for _ in range(int(self.lasts / self.gap)):
                if self.stop.wait(self.gap):
                    return
                try:
                    conn.sendall(b" ")
                except OSError:
                    return  # the agent gave up and closed
                self.sent += 1

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


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
