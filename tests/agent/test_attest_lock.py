"""Two attestations of one VM never run at once from this agent (docs/agent.md, "One
attestation at a time").

The monitor raises a high ``quote_replayed`` alert when an older quote of a VM is
answered after a newer one; a daemon cycle and a manual ``bootwatch agent attest`` (or
two manual runs) crossing in flight did exactly that.  Each attestation now holds an
exclusive ``flock`` on ``attest.lock`` in the agent's state directory from before its
quote until the provider's answer.  Here: real lock files, a holder in another process
(a real ``AttestLock`` in a subprocess), the real daemon cycle and command line, and
two real attestations of one lab VM against the real service at once.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bootwatch.agent.attestation import Verdict, attest_once
from bootwatch.agent.attestlock import ATTEST_LOCK, AttestLock
from bootwatch.agent.config import load_config
from bootwatch.agent.daemon import AgentDaemon
from bootwatch.agent.errors import AttestationBusyError, PlatformError
from bootwatch.protocol.health import FailedHop, HealthStatus

from .conftest import EVENTLOGS

LOG = EVENTLOGS / "go-tpm-tools/cos-101-amd-sev.bin"

#: another process holding the lock the way an attestation does, until its stdin closes
HOLDER = """
import sys
from pathlib import Path
from bootwatch.agent.attestlock import AttestLock
with AttestLock(Path(sys.argv[1]), wait=0).hold():
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def held_elsewhere(lock_file: Path,
                   releasing: threading.Event | None = None) -> Iterator[None]:
    """``lock_file`` held by another process for the block; ``releasing`` is set just
    before the test lets it go (the holder cannot release earlier)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_file)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        if releasing is not None:
            releasing.set()
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


def test_a_holder_in_another_process_makes_an_attestation_fail_with_the_typed_error(
    tmp_path: Path,
) -> None:
    lock_file = tmp_path / "state" / ATTEST_LOCK
    tmp_path.joinpath("state").mkdir()
    with held_elsewhere(lock_file):
        with pytest.raises(AttestationBusyError) as caught, \
                AttestLock(lock_file, wait=0.3).hold():
            pytest.fail("the lock was taken while another process held it")
        assert caught.value.code == "attestation_busy"
        assert f"held {lock_file} for more than 0.3 s" in str(caught.value)
        assert "try again once it has finished" in str(caught.value)
        # the attestation itself: a platform error at the local hop naming the file, and
        # the TPM is never opened (its error would be the reason otherwise)
        outcome = attest_once("device:/nonexistent/tpm", LOG.read_bytes(),
                              "https://127.0.0.1:1", lock=AttestLock(lock_file, wait=0.3))
        assert outcome.verdict is Verdict.PLATFORM_ERROR and outcome.step == "local"
        assert outcome.error_code == "attestation_busy"
        assert str(lock_file) in outcome.reason and "TPM" not in outcome.reason
    with AttestLock(lock_file, wait=0).hold():  # free again once the holder is gone
        pass


def test_a_waiting_attestation_takes_the_lock_only_once_the_holder_released_it(
    tmp_path: Path,
) -> None:
    lock_file = tmp_path / ATTEST_LOCK
    seen: list[bool] = []
    trying, releasing = threading.Event(), threading.Event()

    def second() -> None:
        trying.set()
        with AttestLock(lock_file, wait=120).hold():
            seen.append(releasing.is_set())  # got it only once the holder was let go

    with held_elsewhere(lock_file, releasing):
        waiter = threading.Thread(target=second)
        waiter.start()
        assert trying.wait(timeout=60)
    waiter.join(timeout=120)
    assert not waiter.is_alive()
    assert seen == [True]


def test_two_state_directories_do_not_block_each_other(tmp_path: Path) -> None:
    """Lab VMs in one process (a fleet) each have their own state directory."""
    a, b = tmp_path / "vm-a" / ATTEST_LOCK, tmp_path / "vm-b" / ATTEST_LOCK
    with held_elsewhere(a):
        with AttestLock(b, wait=0).hold(), AttestLock(tmp_path / "vm-c" / ATTEST_LOCK,
                                                      wait=0).hold():
            pass
        with pytest.raises(AttestationBusyError), AttestLock(a, wait=0).hold():
            pytest.fail("the lock was taken while another process held it")


def test_two_holders_in_one_process_exclude_each_other(tmp_path: Path) -> None:
    """Two attestations of one VM from threads of one process (flock belongs to the open
    file, not to the process): the second gives up after its wait."""
    lock_file = tmp_path / ATTEST_LOCK
    with AttestLock(lock_file, wait=0).hold(), \
            pytest.raises(AttestationBusyError, match=str(lock_file)), \
            AttestLock(lock_file, wait=0.05).hold():
        pytest.fail("a second holder in the same process took the lock")
    with AttestLock(lock_file, wait=0).hold():
        pass


def test_the_daemon_reports_a_busy_lock_as_a_local_platform_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    overrides = {"state_dir": str(state), "url": "https://127.0.0.1:1",
                 "tcti": "device:/nonexistent/tpm", "log": str(LOG), "timeout": "0.3",
                 "vm_id": "vm-lock-1"}
    daemon = AgentDaemon(load_config(None, environ={}, overrides=overrides), environ={})
    with held_elsewhere(state / ATTEST_LOCK):
        result = daemon.run_once()
    assert result.health is HealthStatus.PLATFORM_ERROR and result.exit_code == 2
    assert result.report is not None and result.report.failed_hop is FailedHop.LOCAL
    assert str(state / ATTEST_LOCK) in result.report.platform_error_message
    assert str(state / ATTEST_LOCK) in result.status.message
    saved = json.loads((state / "agent-state.json").read_text())
    assert saved["consecutive_failures"] == 1 and saved["backoff_until"] is not None
    # the next cycle, the lock free, goes on to the TPM (which this machine lacks)
    again = daemon.run_once()
    assert "nonexistent" in again.status.message and ATTEST_LOCK not in again.status.message


def _agent_attest(*extra: str, env: dict[str, str] | None = None,
                  ) -> subprocess.CompletedProcess[str]:
    """``bootwatch agent attest --json`` on a TPM this machine lacks."""
    argv = [sys.executable, "-m", "bootwatch.cli.main", "agent", "attest",
            "--tcti", "device:/nonexistent/tpm", "--log", str(LOG),
            "--url", "https://127.0.0.1:1", "--json", *extra]
    base = {k: v for k, v in os.environ.items() if k != "BOOTWATCH_AGENT_STATE_DIR"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**base, **(env or {})})


def test_agent_attest_waits_for_the_daemons_lock_then_fails_naming_it(tmp_path: Path) -> None:
    """``bootwatch agent attest --state-dir`` takes the daemon's lock: held there, the run
    fails after the 15 s bound as a platform error (exit 2) naming the file."""
    state = tmp_path / "state"
    with held_elsewhere(state / ATTEST_LOCK):
        busy = _agent_attest("--state-dir", str(state))
    assert busy.returncode == 2, busy.stderr
    out = json.loads(busy.stdout)
    assert out["verdict"] == "platform-error" and out["error_code"] == "attestation_busy"
    assert f"held {state / ATTEST_LOCK} for more than 15 s" in out["reason"]
    free = _agent_attest("--state-dir", str(state))
    assert free.returncode == 2 and json.loads(free.stdout)["reason"].startswith("TPM: ")


def test_agent_attest_takes_the_state_directory_of_the_daemons_environment(
    tmp_path: Path,
) -> None:
    state = tmp_path / "from-env"
    done = _agent_attest(env={"BOOTWATCH_AGENT_STATE_DIR": str(state)})
    assert done.returncode == 2 and json.loads(done.stdout)["reason"].startswith("TPM: ")
    assert (state / ATTEST_LOCK).is_file()


# --- two real attestations of one lab VM at once -----------------------------------------


class RecordingLock(AttestLock):
    """The real lock, noting when each attestation wants, gets and gives it back.  Both
    wait for each other before they try, so the two really contend for it."""

    def __init__(self, path: Path, name: str, events: list[tuple[str, str]],
                 both_want: threading.Barrier) -> None:
        super().__init__(path, wait=120)
        self.name, self.events, self.both_want = name, events, both_want

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.events.append(("want", self.name))
        self.both_want.wait(timeout=60)
        with super().hold():
            self.events.append(("in", self.name))
            yield
            self.events.append(("out", self.name))


@pytest.mark.swtpm
def test_two_real_attestations_of_one_vm_at_once_are_answered_one_after_the_other(
    attest_service: Any, cos_vm: Any, tmp_path: Path,
) -> None:
    lock_file = tmp_path / "state" / ATTEST_LOCK
    events: list[tuple[str, str]] = []
    both_want = threading.Barrier(2)
    outcomes: dict[str, Any] = {}
    log = cos_vm.log_path.read_bytes()

    with attest_service.lab.running(cos_vm.name) as vm:
        def attest(name: str) -> None:
            lock = RecordingLock(lock_file, name, events, both_want)
            outcomes[name] = attest_once(vm.tcti, log, attest_service.url,
                                         ca=attest_service.ca, timeout=60, lock=lock)

        threads = [threading.Thread(target=attest, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    for name in ("a", "b"):
        assert outcomes[name].verdict is Verdict.PERMIT, outcomes[name].reason
    assert sorted(events[:2]) == [("want", "a"), ("want", "b")]
    first = events[2][1]
    second = "b" if first == "a" else "a"
    # the second quote was taken only after the first had its answer
    assert events[2:] == [("in", first), ("out", first), ("in", second), ("out", second)]


@pytest.mark.swtpm
def test_agent_attest_on_a_lab_vm_locks_in_the_vms_folder(attest_service: Any,
                                                          cos_vm: Any) -> None:
    """Without --state-dir a lab VM's lock is in its own folder (its TPM state), so runs
    on one lab VM agree and nothing outside the lab is needed."""
    lock_file = cos_vm.path / ATTEST_LOCK
    lock_file.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "BOOTWATCH_AGENT_STATE_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "agent", "attest", "--lab-vm",
         cos_vm.name, "--lab-dir", str(attest_service.lab.root), "--url", attest_service.url,
         "--ca", str(attest_service.ca), "--json"],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["verdict"] == "permit"
    assert lock_file.is_file()


# --- found in review: the lock file lives in a directory a less trusted identity can write
# (the daemon's StateDirectory, owned by the bootwatch user, which a root `agent attest`
# uses by default); whoever writes it can replace attest.lock before root's next run.
# Run here as the file's owner, which is the root case exactly.


def test_a_symlinked_lock_does_not_chmod_its_target(tmp_path: Path) -> None:
    """attest.lock -> a secret file of the caller (mode 0600; /etc/shadow is 0640 or
    0000 root:shadow): _open follows the link, fstat says the caller owns it and that
    it is not world-readable, and fchmod makes it 0644."""
    state = tmp_path / "var-lib-bootwatch"   # writable by the daemon's user
    state.mkdir()
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$hash:...\n")
    secret.chmod(0o600)
    (state / ATTEST_LOCK).symlink_to(secret)   # planted by the bootwatch user
    with pytest.raises(PlatformError, match="cannot open the attestation lock"), \
            AttestLock(state / ATTEST_LOCK, wait=0.1).hold():
        pass
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_a_dangling_symlinked_lock_creates_nothing_at_its_target(tmp_path: Path) -> None:
    """attest.lock -> a path that does not exist (e.g. /etc/nologin, which stops every
    non-root login): root's O_CREAT makes it, owned by root, mode 0644."""
    state = tmp_path / "var-lib-bootwatch"
    state.mkdir()
    target = tmp_path / "etc-nologin"
    (state / ATTEST_LOCK).symlink_to(target)
    with pytest.raises(PlatformError, match="cannot open the attestation lock"), \
            AttestLock(state / ATTEST_LOCK, wait=0.1).hold():
        pass
    assert not target.exists()


def test_the_wait_bound_holds_when_the_lock_is_a_fifo(tmp_path: Path) -> None:
    """attest.lock replaced by a FIFO: open(O_RDONLY) blocks until a writer appears, so
    the 'bounded wait' (here 0.2 s) never starts and the attestation hangs for ever."""
    state = tmp_path / "state"
    state.mkdir()
    fifo = state / ATTEST_LOCK
    os.mkfifo(fifo)
    outcome: list[object] = []

    def attempt() -> None:
        try:
            with AttestLock(fifo, wait=0.2).hold():
                outcome.append("held")
        except PlatformError as exc:
            outcome.append(exc)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(3.0)
    hung = t.is_alive()
    if hung:   # release the blocked open so the test process can end cleanly
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(3.0)
    assert not hung, "AttestLock.hold() blocked in open() past its wait bound"
    assert isinstance(outcome[0], PlatformError) and "not a plain file" in str(outcome[0])
