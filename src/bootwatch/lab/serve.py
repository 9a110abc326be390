"""Serve a running lab VM's vTPM to other TPM stacks in the simulator (mssim) framing.

Why a relay: swtpm's ``--server`` socket speaks *raw* TPM commands (what
tpm2-tss's ``swtpm`` TCTI expects) and accepts one connection at a time, while
most guest-side tools know the Microsoft/IBM simulator framing (tpm2-tss's
``mssim`` TCTI): a command port P carrying ``TPM_SEND_COMMAND (8), locality
u8, size u32, command`` answered by ``size u32, response, 0 u32``, and a
platform port P+1 carrying u32 signals (power, NV, reset) answered by a u32
0.  swtpm cannot speak that framing, so this relay does, in front of the lab
VM's swtpm.

Behaviour worth knowing:

* platform signals (power on/off, NV on, reset, cancel) are acknowledged but
  *not* executed: the lab VM stays booted with its PCRs, which is the point;
  reboot it with the lab instead;
* clients are serialised whole: a client owns the TPM from its first command
  until it disconnects (or sends ``TPM_SESSION_END``), others wait (up to
  :data:`CLIENT_WAIT` seconds), as with ``/dev/tpm0``; when a client leaves,
  the transient objects and sessions it left behind are flushed, because
  swtpm has three object slots and no resource manager;
* the locality byte of a command is applied through swtpm's control channel
  when it changes;
* only loopback; commands larger than 4096 bytes are refused (TPM2's maximum).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable
from typing import Final

from bootwatch.errors import LabError
from bootwatch.lab.swtpm import SwtpmProcess

__all__ = ["CLIENT_WAIT", "MssimRelay"]

log = logging.getLogger("bootwatch.lab.serve")

_HOST: Final = "127.0.0.1"
TPM_SIGNAL_POWER_ON: Final = 1
TPM_SEND_COMMAND: Final = 8
TPM_SESSION_END: Final = 20
TPM_STOP: Final = 21
MAX_COMMAND: Final = 4096
#: how long a client waits for another to finish with the TPM
CLIENT_WAIT: Final = 60.0
#: TPM_RC_RETRY (the TPM is busy), answered to a client that waited too long
_RC_RETRY: Final = 0x922


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("client closed the connection")
        buf += chunk
    return bytes(buf)


def _error_response(rc: int) -> bytes:
    return struct.pack(">HII", 0x8001, 10, rc)


class MssimRelay:
    """mssim framing on P (commands) and P+1 (platform) in front of one swtpm."""

    def __init__(self, swtpm: SwtpmProcess, port: int) -> None:
        self._swtpm = swtpm
        self.port = port
        self._tpm_lock = threading.Lock()  # one client owns the TPM at a time
        self._io_lock = threading.Lock()
        self._locality: int | None = None
        self._upstream: socket.socket | None = None
        self._stop = threading.Event()
        self._servers: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.clients_served = 0

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        for p, handler in ((self.port, self._command_client),
                           (self.port + 1, self._platform_client)):
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                srv.bind((_HOST, p))
            except OSError as exc:
                srv.close()
                self.stop()
                raise LabError(f"cannot listen on {_HOST}:{p}: {exc.strerror}") from None
            srv.listen(16)
            srv.settimeout(0.2)
            self._servers.append(srv)
            t = threading.Thread(target=self._accept_loop, args=(srv, handler), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for srv in self._servers:
            with contextlib.suppress(OSError):
                srv.close()
        for t in self._threads:
            t.join(timeout=2)
        if self._upstream is not None:
            with contextlib.suppress(OSError):
                self._upstream.close()
            self._upstream = None

    def wait(self) -> None:
        """Block until :meth:`stop` (called from a signal handler or another thread)."""
        self._stop.wait()

    def _accept_loop(self, srv: socket.socket,
                     handler: Callable[[socket.socket], None]) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._guard, args=(handler, conn), daemon=True).start()

    def _guard(self, handler: Callable[[socket.socket], None], conn: socket.socket) -> None:
        with conn:
            try:
                handler(conn)
            except (ConnectionError, OSError):
                pass
            except LabError as exc:
                log.warning("mssim client dropped: %s", exc)

    # --- the two ports -----------------------------------------------------------

    def _platform_client(self, conn: socket.socket) -> None:
        while True:
            (signal,) = struct.unpack(">I", _recv_exact(conn, 4))
            conn.sendall(struct.pack(">I", 0))  # acknowledged, never executed (module doc)
            if signal in (TPM_SESSION_END, TPM_STOP):
                return

    def _command_client(self, conn: socket.socket) -> None:
        owned = False
        try:
            while True:
                (cmd,) = struct.unpack(">I", _recv_exact(conn, 4))
                if cmd in (TPM_SESSION_END, TPM_STOP):
                    return
                if cmd != TPM_SEND_COMMAND:
                    conn.sendall(struct.pack(">I", 0))
                    continue
                locality = _recv_exact(conn, 1)[0]
                (size,) = struct.unpack(">I", _recv_exact(conn, 4))
                if not 10 <= size <= MAX_COMMAND:
                    raise LabError(f"command size {size} outside 10..{MAX_COMMAND}")
                command = _recv_exact(conn, size)
                if not owned:
                    if not self._tpm_lock.acquire(timeout=CLIENT_WAIT):
                        rsp = _error_response(_RC_RETRY)
                        conn.sendall(struct.pack(">I", len(rsp)) + rsp + struct.pack(">I", 0))
                        continue
                    owned = True
                rsp = self._forward(locality, command)
                conn.sendall(struct.pack(">I", len(rsp)) + rsp + struct.pack(">I", 0))
        finally:
            if owned:
                try:
                    self._flush_leftovers()
                finally:
                    self.clients_served += 1
                    self._tpm_lock.release()

    # --- upstream (swtpm's raw data socket) -------------------------------------

    def _forward(self, locality: int, command: bytes) -> bytes:
        with self._io_lock:
            if locality != self._locality:
                self._swtpm.set_locality(locality)
                self._locality = locality
            for attempt in (0, 1):
                try:
                    if self._upstream is None:
                        self._upstream = socket.create_connection(
                            (_HOST, self._swtpm.port), timeout=30)
                    self._upstream.sendall(command)
                    head = _recv_exact(self._upstream, 10)
                    (rsize,) = struct.unpack(">I", head[2:6])
                    if not 10 <= rsize <= MAX_COMMAND:
                        raise LabError(f"swtpm answered with a response size of {rsize}")
                    return head + _recv_exact(self._upstream, rsize - 10)
                except (ConnectionError, OSError):
                    if self._upstream is not None:
                        with contextlib.suppress(OSError):
                            self._upstream.close()
                    self._upstream = None
                    if attempt:
                        raise LabError("the lab VM's swtpm closed its data socket") from None
            raise AssertionError("unreachable")  # pragma: no cover

    def _flush_leftovers(self) -> None:
        """Flush transient objects and loaded sessions a client left in the TPM."""
        for first in (0x80000000, 0x02000000, 0x03000000):
            cmd = struct.pack(">HIIIII", 0x8001, 22, 0x17A, 1, first, 64)
            try:
                rsp = self._forward(0, cmd)
            except LabError:
                return
            if len(rsp) < 19 or struct.unpack(">I", rsp[6:10])[0] != 0:
                continue
            (count,) = struct.unpack(">I", rsp[15:19])
            for i in range(min(count, 64)):
                off = 19 + 4 * i
                if off + 4 > len(rsp):
                    break
                (handle,) = struct.unpack(">I", rsp[off:off + 4])
                with contextlib.suppress(LabError):
                    self._forward(0, struct.pack(">HIII", 0x8001, 14, 0x165, handle))
