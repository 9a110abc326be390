"""``bootwatch lab vm serve``: a lab VM's vTPM in the mssim framing for tpm2-tools,
two concurrent clients serialised, PCRs as the VM booted them."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import pytest

pytestmark = pytest.mark.swtpm


def _free_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def _recv(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "the relay closed the connection"
        buf += chunk
    return buf


def _pcrread(port: int, sel: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["tpm2_pcrread", "-T", f"mssim:host=127.0.0.1,port={port}", sel],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _values(text: str) -> dict[int, bytes]:
    return {int(m[1]): bytes.fromhex(m[2]) for m in re.finditer(r"(\d+)\s*:\s*0x([0-9A-F]+)",
                                                                 text)}


def test_serve_mssim_to_tpm2_tools_two_concurrent_clients(lab: Any, lab_vms: Any) -> None:
    if shutil.which("tpm2_pcrread") is None:
        pytest.fail("tpm2_pcrread not installed (scripts/setup installs tpm2-tools)")
    with lab.running("rhel8") as vm:
        want = vm.read_pcrs(range(8))
    port = _free_pair()
    env = dict(os.environ, BOOTWATCH_LAB_DIR=str(lab.root))
    server = subprocess.Popen([sys.executable, "-m", "bootwatch.cli.main", "lab", "vm", "serve",
                               "rhel8", "--port", str(port)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert server.stdout is not None
        banner = [server.stdout.readline() for _ in range(2)]
        assert f"mssim:host=127.0.0.1,port={port}" in banner[0], banner
        assert banner[1].strip() == f"event log: {lab_vms['rhel8'].log_path}"
        # two clients at once: both connected, served one after the other, both right
        clients = [_pcrread(port, "sha256:0,1,2,3,4,5,6,7") for _ in range(2)]
        outs = [c.communicate(timeout=60) for c in clients]
        for c, (out, err) in zip(clients, outs, strict=True):
            assert c.returncode == 0, err
            assert _values(out) == want
        # serialised: a client holding the TPM (connected, one command sent) makes the
        # next one wait until it leaves
        holder = socket.create_connection(("127.0.0.1", port), timeout=10)
        get_random = bytes.fromhex("80010000000c0000017b0008")
        holder.sendall(struct.pack(">IBI", 8, 0, len(get_random)) + get_random)
        size = struct.unpack(">I", _recv(holder, 4))[0]
        assert struct.unpack(">I", _recv(holder, size)[6:10])[0] == 0  # TPM_RC_SUCCESS
        _recv(holder, 4)
        waiting = _pcrread(port, "sha256:0")
        time.sleep(1.5)
        assert waiting.poll() is None, "the second client was not made to wait"
        holder.sendall(struct.pack(">I", 20))  # TPM_SESSION_END
        holder.close()
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, err
        assert _values(out) == {0: want[0]}
        server.send_signal(signal.SIGTERM)
        rest, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, err
    assert "4 client(s) served" in rest
