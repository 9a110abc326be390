"""One swtpm process on loopback: start on free ports, control channel, stop.

Why not a TCTI for everything: the control channel is how a simulated
platform does what firmware does before the OS: _TPM_Init, the startup
locality, the H-CRTM hash sequence.  Those use ``swtpm_ioctl`` (the recipes
in vtpm-notes.md), and TPM2_Startup at a non-zero locality goes as raw bytes
on the data socket because the swtpm TCTI would reset the locality to 0.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bootwatch.errors import LabError

__all__ = [
    "STARTUP_CLEAR",
    "SwtpmProcess",
]

_HOST = "127.0.0.1"
#: TPM2_Startup(TPM_SU_CLEAR), as raw command bytes.
STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
_START_TIMEOUT = 5.0
_STOP_TIMEOUT = 5.0
_IOCTL_TIMEOUT = 10.0


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise LabError(f"{binary} not found: install the Debian packages swtpm and swtpm-tools")
    return path


#: where swtpm ports are drawn from when the kernel's ephemeral range leaves room below it
_LOW_PORT = 10000
_PORT_ATTEMPTS = 200


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _pair_is_free(port: int) -> bool:
    with socket.socket() as a, socket.socket() as b:
        try:
            a.bind((_HOST, port))
            b.bind((_HOST, port + 1))
        except OSError:
            return False
    return True


def _free_port_pair() -> int:
    """A port P with P and P+1 free on loopback (the swtpm TCTI uses P+1 for control).

    Drawn below the kernel's ephemeral range: a fleet's agents and lab boots make
    thousands of short connections, whose client ports linger in TIME_WAIT for a minute
    all over the ephemeral range, so a pair taken from there is often half taken (the
    500-VM fleet benchmark ran out after about 400 VMs).  Falls back to pairs the kernel
    hands out when the range leaves no room below it.
    """
    low, _ = _ephemeral_range()
    pick = secrets.SystemRandom()
    if low - 2 > _LOW_PORT:
        for _ in range(_PORT_ATTEMPTS):
            port = pick.randrange(_LOW_PORT, low - 2)
            if _pair_is_free(port):
                return port
    for _ in range(_PORT_ATTEMPTS):
        with socket.socket() as a:
            a.bind((_HOST, 0))
            port = a.getsockname()[1]
        if port < 65535 and _pair_is_free(port):
            return int(port)
    raise LabError("no pair of free consecutive loopback ports found below or in the "
                   "kernel's ephemeral range (net.ipv4.ip_local_port_range)")


@dataclass
class SwtpmProcess:
    """A running ``swtpm socket`` serving one state directory."""

    state_dir: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def tcti(self) -> str:
        """TCTI string for tpm2-pytss / tpm2-tools."""
        return f"swtpm:host={_HOST},port={self.port}"

    @classmethod
    def start(cls, state_dir: Path) -> SwtpmProcess:
        """Start swtpm on free loopback ports; the TPM waits for :meth:`init`.

        Between drawing a free pair and swtpm's bind another process (a second fleet
        on the machine) can take the pair; a readiness probe by port number would then
        reach *that* swtpm, whose vTPM this instance would drive from then on.  So the
        control socket is bound here and handed to swtpm (``fd=``; the data socket
        cannot be: swtpm reads a ``--server fd`` as one connection), and readiness is
        a command answered on it: swtpm serves it only once it also bound the data
        port, and exits when that port is taken (then another pair is drawn)."""
        swtpm = _require("swtpm")
        _require("swtpm_ioctl")
        last = ""
        for _ in range(5):
            port = _free_port_pair()
            try:
                ctrl = _listen(port + 1)
            except OSError as exc:
                last = f"port {port + 1} was taken: {exc.strerror}"
                continue
            with ctrl:
                proc = subprocess.Popen(
                    [
                        swtpm, "socket", "--tpm2",
                        "--server", f"type=tcp,port={port},bindaddr={_HOST}",
                        "--ctrl", f"type=tcp,fd={ctrl.fileno()}",
                        "--tpmstate", f"dir={state_dir}",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    pass_fds=(ctrl.fileno(),),
                )
            deadline = time.monotonic() + _START_TIMEOUT
            try:
                while time.monotonic() < deadline:
                    if proc.poll() is not None:
                        last = (proc.stderr.read() if proc.stderr else b""
                                ).decode(errors="replace")
                        break
                    if _ctrl_answers(port + 1):
                        return cls(state_dir=state_dir, port=port, process=proc)
                    time.sleep(0.005)
                else:
                    raise LabError(f"swtpm on port {port} did not answer within "
                                   f"{_START_TIMEOUT} s")
            except BaseException:
                # nobody else holds this process yet, and in its own session it gets no
                # Ctrl-C: a timeout or an interrupt here (KeyboardInterrupt, a fleet
                # stopping) must not leave it running for ever
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stderr is not None:
                    proc.stderr.close()
                raise
        raise LabError(f"swtpm failed to start for {state_dir}: {last.strip()}")

    # --- control channel ---------------------------------------------------

    def ioctl(self, *args: str, data: bytes | None = None) -> str:
        """Run ``swtpm_ioctl`` against this instance's control port."""
        cmd = ["swtpm_ioctl", "--tcp", f"{_HOST}:{self.ctrl_port}", *args]
        try:
            res = subprocess.run(
                cmd, input=data, capture_output=True, timeout=_IOCTL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"swtpm_ioctl {' '.join(args)} timed out") from exc
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise LabError(f"swtpm_ioctl {' '.join(args)} failed: {err}")
        return res.stdout.decode(errors="replace")

    def init(self) -> None:
        """_TPM_Init: a TPM reset (or a resume, when a volatile state file is present)."""
        self.ioctl("-i")

    def set_locality(self, locality: int) -> None:
        if not 0 <= locality <= 4:
            raise LabError(f"locality {locality} is outside 0..4")
        self.ioctl("-l", str(locality))

    def hash_crtm(self, data: bytes) -> None:
        """The H-CRTM sequence (_TPM_Hash_Start/Data/End): PCR0 = 00..04 extended by H(data)."""
        self.ioctl("-h", "-", data=data)

    def store_volatile(self) -> None:
        """Write the volatile state (PCRs, null seed, loaded objects) to the state dir."""
        self.ioctl("-v")

    def send_raw(self, command: bytes) -> bytes:
        """Send one raw TPM command on the data socket and return the raw response."""
        with socket.create_connection((_HOST, self.port), timeout=10) as s:
            s.sendall(command)
            head = _recv_exact(s, 10)
            size = int.from_bytes(head[2:6], "big")
            if not 10 <= size <= 4096:
                raise LabError(f"swtpm answered with a response size of {size}")
            return head + _recv_exact(s, size - 10)

    def startup_clear(self) -> None:
        """TPM2_Startup(CLEAR) as raw bytes: keeps the locality set on the control channel."""
        rsp = self.send_raw(STARTUP_CLEAR)
        rc = int.from_bytes(rsp[6:10], "big")
        if rc != 0:
            raise LabError(f"TPM2_Startup(CLEAR) failed with TPM rc 0x{rc:x}")

    def stop(self, *, save: bool = True) -> None:
        """Stop swtpm; with ``save`` the volatile state is kept for the next start."""
        if self.process.poll() is None:
            try:
                if save:
                    self.store_volatile()
                self.ioctl("-s")
            except LabError:
                self.process.terminate()
            try:
                self.process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            with contextlib.suppress(OSError):
                self.process.stderr.close()


def _listen(port: int) -> socket.socket:
    """A listening loopback socket on ``port`` (OSError when it is taken)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((_HOST, port))
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock


#: CMD_GET_CAPABILITY on swtpm's control channel (a 4-byte big-endian command code)
_CMD_GET_CAPABILITY = (1).to_bytes(4, "big")


def _ctrl_answers(port: int) -> bool:
    """The swtpm holding the control socket answers a command (a connection alone
    proves nothing: the kernel accepts it into the backlog before swtpm runs)."""
    try:
        with socket.create_connection((_HOST, port), timeout=0.5) as s:
            s.sendall(_CMD_GET_CAPABILITY)
            return bool(s.recv(64))
    except OSError:
        return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise LabError("swtpm closed the data connection mid-response")
        buf += chunk
    return bytes(buf)
