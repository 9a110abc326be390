"""``service run`` and ``monitor run`` stop on SIGTERM even with a request in flight that
never completes (a client that sent half a request and went silent: its host gone, a
network cut).  uvicorn waited for such a request for ever, so the process stayed up
until its supervisor's SIGKILL; now it waits ``GRACEFUL_SHUTDOWN_SECONDS``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bwproc import free_port

BOOTWATCH = [sys.executable, "-m", "bootwatch.cli.main"]


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited before listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on {port}")


@pytest.mark.parametrize(("role", "path"), [
    ("service", "/attest/AzureGuest?api-version=2020-10-01"), ("monitor", "/api/v1/reports")])
def test_sigterm_with_a_half_sent_request_still_stops(role: str, path: str,
                                                     tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*BOOTWATCH, role, "run", "--insecure-http", "--host", "127.0.0.1", "--port",
         str(port), "--data-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc)
        stuck = socket.create_connection(("127.0.0.1", port), timeout=5)
        # the request line and headers of a POST, then silence: a request in flight
        stuck.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
                      + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM did not stop the server while a request hung")
        finally:
            stuck.close()
        # uvicorn stops, then re-raises the SIGTERM it caught (exit by that signal)
        assert proc.returncode in (0, -signal.SIGTERM), err.decode(errors="replace")[-1500:]
        assert b"timeout graceful shutdown exceeded" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
