"""bootwatch as separate processes, for the fault tests: start a command in its own
process group, wait for its port, SIGKILL the whole group; drive attestation load
from threads and count what was answered; a private PostgreSQL cluster that a test
may stop and start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ATTEST = "/attest/AzureGuest?api-version=2020-10-01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None,
              ) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Proc:
    """One ``bootwatch ...`` command in its own process group (workers included)."""

    def __init__(self, args: list[str], *, port: int, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.args = args
        self.port = port
        self.log = log
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bootwatch.cli.main import main; main()", *self.args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        out.close()
        wait_port(self.port, proc=self.proc)
        return self

    def kill9(self) -> None:
        """SIGKILL the process and every process of its group (uvicorn workers)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class LoadResult:
    answered: int = 0  # 200 with a token
    denied: int = 0  # 400 policy/evidence answers
    unavailable: int = 0  # 503 with Retry-After
    unavailable_without_retry_after: int = 0
    failed: int = 0  # no answer (connection refused or cut)
    other: dict[int, int] = field(default_factory=dict)
    #: the request ids (``x-bootwatch-request-id``) of every acknowledged answer
    ids: set[str] = field(default_factory=set, repr=False)

    @property
    def acknowledged(self) -> int:
        return self.answered + self.denied


class Load:
    """``threads`` clients posting ``body`` to ``url`` until stopped."""

    def __init__(self, url: str, body: bytes, *, threads: int = 6) -> None:
        self.url = url.rstrip("/") + ATTEST
        self.body = body
        self.threads = threads
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def _run(self) -> None:
        headers = {"content-type": "application/json"}
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, content=self.body, headers=headers)
                except httpx.HTTPError:
                    with self._lock:
                        self.result.failed += 1
                    time.sleep(0.02)
                    continue
                with self._lock:
                    named = r.headers.get("x-bootwatch-request-id")
                    if r.status_code in (200, 400) and named is not None:
                        self.result.ids.add(named)  # tests check len(ids) == acknowledged
                    if r.status_code == 200 and "token" in r.text:
                        self.result.answered += 1
                    elif r.status_code == 400:
                        self.result.denied += 1
                    elif r.status_code == 503:
                        self.result.unavailable += 1
                        if "retry-after" not in r.headers:
                            self.result.unavailable_without_retry_after += 1
                    else:
                        self.result.other[r.status_code] = self.result.other.get(
                            r.status_code, 0) + 1
                if r.status_code == 503:
                    time.sleep(0.05)

    def start(self) -> Load:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def wait_answered(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.result.acknowledged < n:
            assert time.monotonic() < deadline, f"only {self.result} after {timeout} s"
            time.sleep(0.02)

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=60)
        return self.result


def until(check: object, timeout: float, what: str) -> None:
    """Poll ``check()`` until true."""
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


PG_BIN = Path("/usr/lib/postgresql")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A throw-away PostgreSQL cluster on a free port (initdb as the postgres user),
    so a test can stop and start the server without touching the machine's."""
    bins = sorted(PG_BIN.glob("*/bin/initdb"))
    if not bins or shutil.which("runuser") is None:
        raise AssertionError("PostgreSQL server binaries (postgresql) and runuser are needed")
    bindir = bins[-1].parent
    root = Path(tempfile.mkdtemp(prefix="bw-pg-"))
    shutil.chown(root, "postgres")
    pg = PrivatePostgres(bindir, root / "data", root, free_port())
    subprocess.run(["runuser", "-u", "postgres", "--", str(bindir / "initdb"), "-D",
                    str(pg.data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class PrivatePostgres:
    bindir: Path
    data: Path
    sockdir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"), "-D",
                        str(self.data), "-w", "-t", "60", *args], check=True,
                       capture_output=True)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=on", "-l", str(self.sockdir / "pg.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        with suppress(subprocess.CalledProcessError):
            self._ctl("-m", mode, "stop")
