"""The agent daemon end to end: real swtpm lab VMs, the real attestation service over
HTTPS, the monitor test server; cycles, reports, backoff, state, signals, upgrade hook."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from bootwatch.agent.config import load_config
from bootwatch.agent.daemon import EXIT_RESTART, AgentDaemon
from bootwatch.protocol.health import FailedHop, HealthStatus

pytestmark = pytest.mark.swtpm

BOOTWATCH = [sys.executable, "-m", "bootwatch.cli.main"]


def _write_config(path: Path, **keys: Any) -> Path:
    lines = []
    for k, v in keys.items():
        plain = isinstance(v, float | int) and not isinstance(v, bool)
        lines.append(f"{k} = {v if plain else json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _base(svc: Any, vm: Any, tmp_path: Path, monitor: Any = None, **more: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {
        "url": svc.url, "ca": str(svc.ca), "lab_vm": vm.name, "lab_dir": str(svc.lab.root),
        "state_dir": str(tmp_path / "state"), "interval": 1, "jitter": 0,
        # daemons run in a thread of this (threaded) test process: no fork here; the
        # subprocess test below runs cycles in forked children, as in production
        "cycle_in_child": False,
    }
    if monitor is not None:
        keys["monitor_url"] = monitor.url
    keys.update(more)
    return keys


def _status(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    assert isinstance(doc, list) and doc[0]["version"] == 1.0
    return dict(doc[0]["status"])


def _run_until(daemon: AgentDaemon, done: Callable[[], bool], *, timeout: float = 60,
               linger: float = 0.0) -> None:
    """Run ``daemon`` in a thread until ``done()`` (or ``timeout``), ``linger`` seconds
    more (for what must NOT happen next), then stop it and check that it stopped."""
    thread = threading.Thread(target=daemon.run)
    thread.start()
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(linger)
    daemon.request_stop()
    thread.join(timeout=30)
    assert not thread.is_alive()


class FakeHook:
    def __init__(self, upgrade_after: int | None = None) -> None:
        self.calls: list[bool] = []
        #: time.time() at each after_cycle call
        self.times: list[float] = []
        self.asked = 0
        #: the next_chance of each maybe_upgrade call (when the daemon asks again)
        self.chances: list[float | None] = []
        self.upgrade_after = upgrade_after
        #: the deadline of a pending upgrade under trial (None: none)
        self.deadline: float | None = None

    def after_cycle(self, succeeded: bool) -> None:
        self.calls.append(succeeded)
        self.times.append(time.time())

    def maybe_upgrade(self, next_chance: float | None = None,
                      keepalive: Callable[[], None] | None = None) -> bool:
        self.asked += 1
        self.chances.append(next_chance)
        assert keepalive is not None  # the daemon lends its keep-alive to long steps
        keepalive()
        return self.upgrade_after is not None and self.asked >= self.upgrade_after

    def pending_deadline(self) -> float | None:
        return self.deadline


def test_daemon_cycles_report_and_restart_keeps_state(attest_service: Any, cos_vm: Any,
                                                      monitor: Any, tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "agent.toml", **_base(attest_service, cos_vm, tmp_path,
                                                         monitor))
    _run_until(AgentDaemon(load_config(cfg, environ={})),
               lambda: len(monitor.state.reports) >= 3)
    reports = monitor.state.reports
    assert len(reports) >= 3
    for r in reports:
        assert r.health_status is HealthStatus.HEALTHY
        assert r.attestation_uri == attest_service.url
        assert r.boot_counter == reports[0].boot_counter
    # the VM id the agent reports is the one the token carries
    claims = jwt.decode(reports[0].attestation_token, options={"verify_signature": False})
    assert reports[0].vm_id == claims["x-ms-azurevm-vmid"] == cos_vm.vm_id.upper()
    status = _status(tmp_path / "state" / "status" / "0.status")
    assert status["status"] == "success" and status["name"] == "GuestAttestation"
    assert "provisioning succeeded" in status["formattedMessage"]["message"]
    beat = json.loads((tmp_path / "state" / "status" / "heartbeat.json").read_text())
    assert beat[0]["heartbeat"]["status"] == "ready"
    state = json.loads((tmp_path / "state" / "agent-state.json").read_text())
    assert state["cycles"] == len(reports) and state["last_success"] is not None
    # a restart keeps the state: same boot counter, cycles continue, no immediate flood
    again = AgentDaemon(load_config(cfg, environ={}))
    result = again.run_once()
    assert result.health is HealthStatus.HEALTHY and result.exit_code == 0
    after = json.loads((tmp_path / "state" / "agent-state.json").read_text())
    assert after["cycles"] == state["cycles"] + 1
    assert after["boot_counter"] == state["boot_counter"] == reports[0].boot_counter
    assert monitor.state.reports[-1].boot_counter == state["boot_counter"]


def test_retry_after_from_the_monitor_is_honoured_across_a_restart(
        attest_service: Any, cos_vm: Any, monitor: Any, tmp_path: Path) -> None:
    monitor.state.fail_next = 1
    monitor.state.retry_after = "3"
    cfg = _write_config(tmp_path / "agent.toml", **_base(attest_service, cos_vm, tmp_path,
                                                         monitor))
    first = AgentDaemon(load_config(cfg, environ={})).run_once()
    assert first.delivered is False and "Retry-After 3 s" in first.delivery_error
    assert first.exit_code == 2
    assert _status(tmp_path / "state" / "status" / "0.status")["status"] == "warning"
    state = json.loads((tmp_path / "state" / "agent-state.json").read_text())
    assert 3 <= state["backoff_until"] - state["last_attempt"] < 3 + 10
    assert (tmp_path / "state" / "pending-report.json").exists()
    # a new daemon (a restart) waits for the Retry-After before its next attempt
    _run_until(AgentDaemon(load_config(cfg, environ={})), lambda: bool(monitor.state.reports),
               timeout=90)
    assert monitor.state.reports, "the report was never delivered"
    gap = monitor.state.attempts[1] - monitor.state.attempts[0]
    assert gap >= 3.0 - 0.05
    assert not (tmp_path / "state" / "pending-report.json").exists()


def test_retry_after_zero_on_every_answer_does_not_make_a_tight_loop(
        attest_service: Any, cos_vm: Any, monitor: Any, tmp_path: Path) -> None:
    monitor.state.fail_next = 1000
    monitor.state.retry_after = "0"
    cfg = _write_config(tmp_path / "agent.toml", **_base(attest_service, cos_vm, tmp_path,
                                                         monitor, interval=600))
    # lingering: a loop would have sent several more by then
    _run_until(AgentDaemon(load_config(cfg, environ={})),
               lambda: len(monitor.state.attempts) >= 2, linger=2)
    # the first Retry-After is honoured (at once); the second failure backs off 30 s
    assert len(monitor.state.attempts) == 2
    state = json.loads((tmp_path / "state" / "agent-state.json").read_text())
    assert state["consecutive_failures"] == 2
    assert 30 <= state["backoff_until"] - state["last_attempt"] < 30 + 10


def test_a_report_a_proxy_or_wrong_path_refuses_stays_pending(
        attest_service: Any, cos_vm: Any, monitor: Any, tmp_path: Path) -> None:
    # a 403 (or 401, 404, 407) is not the monitor reading the report: it is kept, and
    # goes first once the path works again
    monitor.state.refuse_next = 1
    cfg = _write_config(tmp_path / "agent.toml", **_base(attest_service, cos_vm, tmp_path,
                                                         monitor))
    first = AgentDaemon(load_config(cfg, environ={})).run_once()
    assert first.delivered is False and not first.report_refused
    assert "HTTP 403" in first.delivery_error and first.exit_code == 2
    assert (tmp_path / "state" / "pending-report.json").exists()
    second = AgentDaemon(load_config(cfg, environ={})).run_once()
    assert second.delivered is True
    assert first.report is not None and second.report is not None
    assert [r.report_id for r in monitor.state.reports] == [first.report.report_id,
                                                            second.report.report_id]
    assert not (tmp_path / "state" / "pending-report.json").exists()


def test_once_exit_codes_and_platform_errors(attest_service: Any, cos_vm: Any, sboff_vm: Any,
                                             monitor: Any, tmp_path: Path) -> None:
    env = dict(os.environ, BOOTWATCH_LAB_DIR=str(attest_service.lab.root))
    common = ["agent", "run", "--once", "--url", attest_service.url, "--ca",
              str(attest_service.ca), "--monitor-url", monitor.url, "--interval", "5"]
    ok = subprocess.run([*BOOTWATCH, *common, "--lab-vm", cos_vm.name, "--state-dir",
                         str(tmp_path / "a")], capture_output=True, text=True, env=env,
                        timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("Healthy: GuestAttestation provisioning succeeded")
    deny = subprocess.run([*BOOTWATCH, *common, "--lab-vm", sboff_vm.name, "--state-dir",
                           str(tmp_path / "b"), "--status-file", str(tmp_path / "b.status")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert deny.returncode == 1, deny.stdout + deny.stderr
    status = _status(tmp_path / "b.status")
    assert status["status"] == "warning"
    assert "PolicyEvaluationError" in status["formattedMessage"]["message"]
    assert monitor.state.reports[-1].health_status is HealthStatus.UNHEALTHY
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    for log, words in ((empty, "is empty"), (tmp_path / "missing.bin", "does not exist")):
        res = subprocess.run([*BOOTWATCH, *common, "--lab-vm", cos_vm.name, "--log", str(log),
                              "--state-dir", str(tmp_path / "c")],
                             capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "Traceback" not in res.stderr
        message = _status(tmp_path / "c" / "status" / "0.status")["formattedMessage"]["message"]
        assert message.startswith("GuestAttestation provisioning failed: ")
        assert str(log) in message and words in message
        last = monitor.state.reports[-1]
        assert last.health_status is HealthStatus.PLATFORM_ERROR
        assert last.failed_hop is FailedHop.LOCAL and str(log) in last.platform_error_message


def test_sigterm_stops_cleanly_and_sighup_reloads(attest_service: Any, cos_vm: Any,
                                                  monitor: Any, tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "agent.toml", **_base(attest_service, cos_vm, tmp_path,
                                                         interval=600, cycle_in_child=True))
    status_file = tmp_path / "state" / "status" / "0.status"
    proc = subprocess.Popen([*BOOTWATCH, "agent", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if status_file.exists() and _status(status_file)["status"] == "success":
                break
            time.sleep(0.1)
        assert _status(status_file)["status"] == "success"
        assert not monitor.state.reports  # no monitor configured yet
        # SIGHUP: the new configuration (now with a monitor) is used at once
        _write_config(cfg, **_base(attest_service, cos_vm, tmp_path, monitor, interval=600,
                                   cycle_in_child=True))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while not monitor.state.reports and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(monitor.state.reports) == 1
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "reloading the configuration" in err
    assert "Traceback" not in err


def test_upgrade_hook_called_after_each_cycle(attest_service: Any, cos_vm: Any,
                                              tmp_path: Path) -> None:
    keys = _base(attest_service, cos_vm, tmp_path)
    plain = _write_config(tmp_path / "plain.toml", **keys)
    hook = FakeHook(upgrade_after=1)
    result = AgentDaemon(load_config(plain, environ={}), upgrade_hook=hook).run_once()
    assert result.succeeded and hook.calls == [True] and hook.asked == 0
    # with an [upgrade] table the daemon asks, and exits EXIT_RESTART when one was installed
    with_upgrade = tmp_path / "upgrade.toml"
    with_upgrade.write_text(plain.read_text() + '\n[upgrade]\nchannel = "stable"\n')
    loaded = load_config(with_upgrade, environ={})
    assert loaded.warnings == () and loaded.config.upgrade == {"channel": "stable"}
    hook = FakeHook(upgrade_after=2)
    daemon = AgentDaemon(loaded, upgrade_hook=hook)
    assert daemon.run() == EXIT_RESTART
    assert hook.calls == [True, True] and hook.asked == 2
    # the daemon says when it asks next: its next cycle, after this one
    assert len(hook.chances) == 2
    assert all(c is not None and c > t for c, t in zip(hook.chances, hook.times, strict=True))


def test_a_failed_cycle_on_an_upgrade_under_trial_retries_at_its_rollback_deadline(
        attest_service: Any, sboff_vm: Any, tmp_path: Path) -> None:
    # an Unhealthy VM and an hour's interval: the next cycle would be an hour away (it
    # was, and the upgrader judged the new version only then); with an upgrade under
    # trial the daemon comes back just past its rollback deadline, once
    cfg = _write_config(tmp_path / "agent.toml",
                        **_base(attest_service, sboff_vm, tmp_path, interval=3600))
    trial = FakeHook()
    trial.deadline = time.time() + 2
    # lingering: a third cycle would come then if the past deadline were retried again
    _run_until(AgentDaemon(load_config(cfg, environ={}), upgrade_hook=trial),
               lambda: len(trial.calls) >= 2, linger=2)
    assert trial.calls == [False, False]
    assert trial.times[1] >= trial.deadline


def test_aik_certificate_near_expiry_is_a_warning(attest_service: Any, cos_vm: Any,
                                                  tmp_path: Path) -> None:
    aik_days = (cos_vm.aik_cert.not_valid_after_utc.timestamp() - time.time()) / 86400
    keys = _base(attest_service, cos_vm, tmp_path, aik_renewal_days=int(aik_days) + 2)
    result = AgentDaemon(load_config(_write_config(tmp_path / "a.toml", **keys),
                                     environ={})).run_once()
    assert result.health is HealthStatus.HEALTHY
    assert result.status.status.value == "warning"
    assert "AIK certificate expires on" in result.status.message
    assert "renew" in result.status.message
    keys["aik_renewal_days"] = max(int(aik_days) - 2, 0)
    result = AgentDaemon(load_config(_write_config(tmp_path / "b.toml", **keys),
                                     environ={})).run_once()
    assert result.status.status.value == "success"


def test_a_cycle_that_never_finishes_is_killed_at_cycle_timeout(
        attest_service: Any, cos_vm: Any, tmp_path: Path) -> None:
    """The waiting daemon used to read its cycle child's pipe for as long as the child
    lived: one peer (or TPM command) that never answered stopped the agent attesting for
    good.  A real daemon process, cycles in forked children as in production, against a
    service address that accepts the connection and never answers (timeout 60 s); the
    cycle is killed at cycle_timeout (2 s) and the status file says why."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    url = f"https://127.0.0.1:{hole.getsockname()[1]}"
    cfg = _write_config(tmp_path / "agent.toml", **_base(
        attest_service, cos_vm, tmp_path, url=url, interval=600, timeout=60,
        cycle_in_child=True, cycle_timeout=2))
    status_file = tmp_path / "state" / "status" / "0.status"
    proc = subprocess.Popen([*BOOTWATCH, "agent", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 50  # well inside the 60 s request timeout
        while time.monotonic() < deadline:
            if status_file.exists() and _status(status_file)["status"] == "error":
                break
            time.sleep(0.1)
        status = _status(status_file)
        assert proc.poll() is None  # the daemon lives on, waiting for its next cycle
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        hole.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status["status"] == "error", status
    message = status["formattedMessage"]["message"]
    assert "did not finish within cycle_timeout (2 s) and was killed" in message
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def _watchdog_socket(tmp_path: Path) -> Any:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.2)
    return sock


def test_the_daemon_sends_systemd_watchdog_keepalives_and_its_children_do_not(
        attest_service: Any, cos_vm: Any, tmp_path: Path) -> None:
    """The unit's WatchdogSec restarts a daemon that stops beating (a hang, or a new
    release stuck before its first cycle, which the pre-start guard then rolls back).
    A real daemon process, cycles in forked children, with NOTIFY_SOCKET as systemd sets
    it: keep-alives arrive at start and from each cycle's heartbeat in the parent; with
    WATCHDOG_PID naming another process (systemd names the main one), none is sent."""
    cfg = _write_config(tmp_path / "agent.toml", **_base(
        attest_service, cos_vm, tmp_path, interval=1, cycle_in_child=True))
    for watchdog_pid, expect in (("", True), ("1", False)):
        sock = _watchdog_socket(tmp_path)
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        if watchdog_pid:
            env["WATCHDOG_PID"] = watchdog_pid
        proc = subprocess.Popen([*BOOTWATCH, "agent", "run", "--config", str(cfg)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        got: list[bytes] = []
        status_file = tmp_path / "state" / "status" / "0.status"
        before = status_file.stat().st_mtime_ns if status_file.exists() else 0
        try:
            cycles = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    got.append(sock.recv(4096))
                if status_file.exists() and status_file.stat().st_mtime_ns != before:
                    before = status_file.stat().st_mtime_ns
                    cycles += 1  # a cycle wrote its status (interval 1 s)
                if cycles >= 3 and (len(got) >= 3 or not expect):
                    break
            assert cycles >= 3
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=30)
        finally:
            sock.close()
            (tmp_path / "notify.sock").unlink()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        if expect:
            assert len(got) >= 3 and set(got) == {b"WATCHDOG=1"}, got
        else:
            assert got == [], got


def test_notifier_addresses_and_no_socket() -> None:
    import socket

    from bootwatch.agent.sdnotify import Notifier

    assert not Notifier({}).enabled and Notifier({}).watchdog() is False
    assert Notifier({"NOTIFY_SOCKET": "relative"}).enabled is False
    name = f"bootwatch-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())  # an abstract socket, as systemd may name one
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog() is True
        assert sock.recv(64) == b"WATCHDOG=1"
    # the socket gone: a keep-alive that cannot be sent is not an error
    assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog() is False


def test_a_cycle_abandoned_for_a_stop_does_not_ask_for_an_upgrade(
        attest_service: Any, cos_vm: Any, monitor: Any, tmp_path: Path) -> None:
    """A stop (SIGTERM) during a cycle abandons its report (kept as pending); the daemon
    used to ask the upgrader even then, which could start a download and an install under
    the unit's 30 s stop timeout (found in review).  The stop arrives during the cycle:
    the daemon's boot-id reader, first called inside it, sets it."""
    cfg = _write_config(tmp_path / "agent.toml", **_base(attest_service, cos_vm, tmp_path,
                                                         monitor))
    with_upgrade = tmp_path / "upgrade.toml"
    with_upgrade.write_text(cfg.read_text() + '\n[upgrade]\nchannel = "stable"\n')
    hook = FakeHook(upgrade_after=1)
    daemon: AgentDaemon | None = None

    def boot_id() -> str:
        assert daemon is not None
        daemon._stop = True  # SIGTERM's handler does this
        return "boot-1"

    daemon = AgentDaemon(load_config(with_upgrade, environ={}), upgrade_hook=hook,
                         boot_id=boot_id)
    assert daemon.run() == 0  # not EXIT_RESTART: nothing was installed
    assert hook.asked == 0 and len(hook.calls) == 1
    assert not monitor.state.reports  # abandoned: kept as pending for the next start
