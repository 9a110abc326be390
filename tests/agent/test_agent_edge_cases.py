"""Edge cases of the agent found in review, each with the smallest real setup that shows it
(real HTTP on loopback: the monitor test server, the real attestation service, a stdlib
server where a header must be exact; swtpm lab VMs only where a token is needed).  Each test
failed on the code before its fix:

- a report kept as pending (monitor busy, or a stop mid-cycle) is sent first next time;
- a provider busy (429/5xx with an MAA error body) while the agent verifies its token is
  unreachable for now (platform error, Retry-After honoured), not an Unhealthy VM;
- relative paths of the file resolve beside it under the CLI; netcheck names a missing CA;
- the upgrade check picks its proxy by the same libcurl rules as the reports;
- a long outage, a non-ASCII Retry-After, a damaged upgrade state, a refused reload, a
  backoff saved under a wrong clock, an unusable proxy variable, a Retry-After date from a
  server with another clock: each handled as docs/agent.md says, none crashes the cycle.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bootwatch.agent.config import load_config
from bootwatch.agent.daemon import AgentDaemon
from bootwatch.protocol.health import HealthStatus, decode_health_report

from .conftest import ThreadServer


def _once(tmp_path: Path, environ: dict[str, str] | None = None, **keys: Any) -> Any:
    overrides: dict[str, Any] = {"state_dir": str(tmp_path / "state"), "interval": "600",
                                 "timeout": "5"}
    overrides.update(keys)
    loaded = load_config(None, environ=environ or {}, overrides=overrides)
    return AgentDaemon(loaded, environ=environ or {}).run_once()


# --- the pending report ----------------------------------------------------------


def test_a_pending_report_is_sent_first_on_the_next_cycle(monitor: Any, tmp_path: Path) -> None:
    # no TPM, no event log: a platform-error cycle, no swtpm needed; the report still goes
    keys = {"url": "https://127.0.0.1:1", "tcti": "device:/nonexistent/tpm",
            "log": str(tmp_path / "no-such-log.bin"), "monitor_url": monitor.url}
    monitor.state.fail_next = 1
    first = _once(tmp_path, **keys)
    assert first.delivered is False
    pending = tmp_path / "state" / "pending-report.json"
    kept = decode_health_report(pending.read_bytes())
    assert kept.report_id == first.report.report_id

    second = _once(tmp_path, **keys)
    assert second.delivered is True
    got = [r.report_id for r in monitor.state.reports]
    # the kept report is delivered too, and before the new one
    assert got == [first.report.report_id, second.report.report_id]
    assert not pending.exists()


# --- a long outage -----------------------------------------------------------------------


def test_a_long_outage_keeps_backing_off_at_the_interval(tmp_path: Path) -> None:
    """After about a thousand failed cycles (17 h at a one-minute interval) the doubling
    backoff must stay capped at the interval, not overflow and crash every cycle."""
    keys = {"url": "https://127.0.0.1:1", "tcti": "device:/nonexistent/tpm",
            "log": str(tmp_path / "no-such-log.bin"), "interval": "60"}
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "agent-state.json").write_text(json.dumps(
        {"boot_id": "b", "boot_counter": 1, "consecutive_failures": 1100, "cycles": 1100}))
    result = _once(tmp_path, **keys)
    assert result.health is HealthStatus.PLATFORM_ERROR
    assert "no-such-log.bin" in result.status.message
    state = json.loads((state_dir / "agent-state.json").read_text())
    assert state["consecutive_failures"] == 1101
    assert 59 <= state["backoff_until"] - state["last_attempt"] <= 61


def test_a_retry_after_that_is_not_ascii_digits_is_ignored_not_a_crash(
        monitor: Any, tmp_path: Path) -> None:
    """str.isdigit() is true for "\u00b2" (superscript two), which float() refuses."""
    keys = {"url": "https://127.0.0.1:1", "tcti": "device:/nonexistent/tpm",
            "log": str(tmp_path / "no-such-log.bin"), "monitor_url": monitor.url}
    monitor.state.fail_next = 1
    monitor.state.retry_after = "\u00b2"
    result = _once(tmp_path, **keys)
    assert result.delivered is False and "503" in result.delivery_error
    assert (tmp_path / "state" / "pending-report.json").exists()


# --- the upgrade hook must not take the daemon down ----------------------------------------


def _release_key(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = tmp_path / "release.pub.pem"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return key


def test_an_unreadable_upgrade_state_does_not_stop_the_daemon(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The upgrade component's own trouble (here a damaged upgrade.json) is logged; the
    agent keeps attesting and reporting: a broken upgrade must not break monitoring."""
    from bootwatch.agent.upgrade import AgentUpgrader, UpgradeConfig

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "upgrade.json").write_text("{ damaged")
    hook = AgentUpgrader(UpgradeConfig(
        monitor_url="http://127.0.0.1:9", release_public_keys=(_release_key(tmp_path),),
        vm_id="vm-1", install_root=tmp_path / "root", state_dir=state_dir),
        running_version="0.1.0")
    loaded = load_config(None, environ={}, overrides={
        "state_dir": str(state_dir), "interval": "600", "url": "https://127.0.0.1:1",
        "tcti": "device:/nonexistent/tpm", "log": str(tmp_path / "no-such-log.bin")})
    try:
        result = AgentDaemon(loaded, environ={}, upgrade_hook=hook).run_once()
    finally:
        hook.close()
    assert result.health is HealthStatus.PLATFORM_ERROR
    assert "no-such-log.bin" in result.status.message
    assert "upgrade.json" in caplog.text


# --- a refused reload stays visible ------------------------------------------------------


def test_a_refused_reload_stays_in_the_status_after_the_cycle_it_starts(tmp_path: Path) -> None:
    """SIGHUP with a configuration that no longer loads: the old one is kept and the status
    says so (docs/agent.md: warning "configuration reload refused"); the cycle the SIGHUP
    starts at once must not wipe that out, or the operator reads the old status only."""
    import threading
    import time

    from bootwatch.errors import ConfigError

    overrides = {"state_dir": str(tmp_path / "state"), "interval": "600",
                 "url": "https://127.0.0.1:1", "tcti": "device:/nonexistent/tpm",
                 "log": str(tmp_path / "no-such-log.bin"), "cycle_in_child": "false"}

    def reload() -> Any:
        raise ConfigError("agent.toml: key 'interval': 'soon' is not a number of seconds")

    daemon = AgentDaemon(load_config(None, environ={}, overrides=overrides), environ={},
                         reload=reload)
    state_file = tmp_path / "state" / "agent-state.json"

    def cycles() -> int:
        try:
            return int(json.loads(state_file.read_text())["cycles"])
        except (OSError, ValueError):
            return 0

    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while cycles() < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        daemon.request_reload()
        while cycles() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        daemon.request_stop()
        thread.join(timeout=20)
    assert cycles() == 2
    doc = json.loads((tmp_path / "state" / "status" / "0.status").read_text())
    message = doc[0]["status"]["formattedMessage"]["message"]
    assert "no-such-log.bin" in message  # the cycle's own outcome
    assert "reload refused" in message and "'soon'" in message


# --- a due time from a wrong clock ---------------------------------------------------------


def test_a_backoff_saved_under_a_clock_far_ahead_does_not_park_the_agent(tmp_path: Path) -> None:
    """A VM that booted with its clock years ahead (before NTP) saved its backoff in that
    time.  A backoff is at most the interval (a Retry-After at most 24 h): a restart under
    the corrected clock must not wait years for it."""
    import threading
    import time

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    ahead = time.time() + 10 * 365 * 86400
    (state_dir / "agent-state.json").write_text(json.dumps(
        {"boot_id": "other-boot", "boot_counter": 1, "last_attempt": ahead - 30,
         "consecutive_failures": 1, "backoff_until": ahead, "cycles": 1}))
    overrides = {"state_dir": str(state_dir), "interval": "1", "jitter": "0",
                 "url": "https://127.0.0.1:1", "tcti": "device:/nonexistent/tpm",
                 "log": str(tmp_path / "no-such-log.bin"), "cycle_in_child": "false"}
    daemon = AgentDaemon(load_config(None, environ={}, overrides=overrides), environ={})
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if json.loads((state_dir / "agent-state.json").read_text())["cycles"] > 1:
                break
            time.sleep(0.05)
    finally:
        daemon.request_stop()
        thread.join(timeout=20)
    state = json.loads((state_dir / "agent-state.json").read_text())
    assert state["cycles"] == 2, "the agent waited for a backoff from the wrong clock"
    assert state["backoff_until"] < time.time() + 60


# --- a proxy setting that is not an http(s) URL ------------------------------------------


def test_an_unusable_proxy_variable_is_reported_not_a_crash(monitor: Any, tmp_path: Path) -> None:
    """all_proxy names a SOCKS proxy (not supported): the attestation fails naming it, and
    the health report to the monitor must fail the same way, not raise out of the cycle."""
    env = {"all_proxy": "socks5://user:s3cret-pw@127.0.0.1:1080"}
    keys = {"url": "https://127.0.0.1:1", "monitor_url": monitor.url}
    result = _once(tmp_path, environ=env, **keys)
    assert result.health is HealthStatus.PLATFORM_ERROR
    assert result.delivered is False
    assert "all_proxy" in result.delivery_error
    assert (tmp_path / "state" / "pending-report.json").exists()
    status = (tmp_path / "state" / "status" / "0.status").read_text()
    state = (tmp_path / "state" / "agent-state.json").read_text()
    for text in (status, state, result.delivery_error, result.status.message):
        assert "s3cret-pw" not in text


# --- Retry-After as an HTTP date from a server whose clock differs ------------------------


def test_a_retry_after_date_is_read_against_the_servers_own_clock(tmp_path: Path) -> None:
    """A monitor 10 minutes behind this VM's clock says "come back in 20 s" as an HTTP
    date (its Date plus 20 s).  Read against the local clock that date is long past and the
    agent would retry at once, every cycle; read against the answer's Date it is 20 s."""
    import email.utils
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    skew = -600.0

    class Busy(BaseHTTPRequestHandler):
        def date_time_string(self, timestamp: float | None = None) -> str:
            return email.utils.formatdate(time.time() + skew, usegmt=True)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = b'{"error": {"code": "Unavailable", "message": "busy"}}'
            self.send_response(503)
            self.send_header("Retry-After",
                             email.utils.formatdate(time.time() + skew + 20, usegmt=True))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        keys = {"url": "https://127.0.0.1:1", "tcti": "device:/nonexistent/tpm",
                "log": str(tmp_path / "no-such-log.bin"),
                "monitor_url": f"http://127.0.0.1:{server.server_address[1]}"}
        result = _once(tmp_path, **keys)
    finally:
        server.shutdown()
        server.server_close()
    assert result.delivered is False and "503" in result.delivery_error
    state = json.loads((tmp_path / "state" / "agent-state.json").read_text())
    # 19-21 s (the date's whole seconds), plus up to RETRY_JITTER (25 %) of it
    assert 18 <= state["backoff_until"] - state["last_attempt"] <= 21 * 1.25 + 1


# --- a busy provider during token verification -------------------------------------


@pytest.fixture
def busy_metadata_front(attest_service: Any) -> Iterator[str]:
    """A loopback front of the real service that relays attestation requests to it but
    answers the OpenID metadata with the service's own 503 shape (an MAA error body and
    Retry-After), as the service does when its database is away or it rate-limits."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def relay(request: Request) -> Response:
        ctx = ssl.create_default_context(cafile=str(attest_service.ca))
        async with httpx.AsyncClient(verify=ctx) as client:
            resp = await client.request(
                request.method, f"{attest_service.url}{request.url.path}",
                params=request.query_params, content=await request.body(),
                headers={"Content-Type": request.headers.get("content-type", "")})
        return Response(resp.content, status_code=resp.status_code,
                        media_type=resp.headers.get("content-type"))

    async def busy(request: Request) -> JSONResponse:
        return JSONResponse({"error": {"code": "ServiceUnavailable",
                                       "message": "the database is away"}},
                            status_code=503, headers={"Retry-After": "7"})

    app = Starlette(routes=[
        Route("/attest/AzureGuest", relay, methods=["POST"]),
        Route("/.well-known/openid-configuration", busy, methods=["GET"]),
    ])
    with ThreadServer(app) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.mark.swtpm
def test_a_busy_provider_during_token_verification_is_not_an_unhealthy_vm(
        attest_service: Any, cos_vm: Any, busy_metadata_front: str, tmp_path: Path) -> None:
    result = _once(tmp_path, url=busy_metadata_front, lab_vm=cos_vm.name,
                   lab_dir=str(attest_service.lab.root))
    assert result.health is HealthStatus.PLATFORM_ERROR, result.status.message
    assert result.status.status.value == "error"
    assert "503" in result.status.message
    assert result.outcome.retry_after == 7
    state = json.loads((tmp_path / "state" / "agent-state.json").read_text())
    assert 7 <= state["backoff_until"] - state["last_attempt"] < 7 + 10


# --- relative paths in the configuration file ------------------------------------------


@pytest.mark.swtpm
def test_a_relative_ca_in_the_file_is_read_beside_the_file_under_the_cli(
        attest_service: Any, tmp_path: Path) -> None:
    """The CLI passes every option it has, given or not (None); a path the file names
    relatively must still resolve against the file's folder, not the working directory
    (under systemd that is /)."""
    import shutil
    import subprocess
    import sys

    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(attest_service.ca, etc / "provider-ca.pem")
    cfg = etc / "agent.toml"
    cfg.write_text(f'url = "{attest_service.url}"\nca = "provider-ca.pem"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    res = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "agent", "netcheck",
                          "--config", str(cfg), "--json"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    steps = {s["step"]: s["result"] for s in json.loads(res.stdout)["steps"]}
    assert steps["tls"] == "ok"


@pytest.mark.swtpm
def test_netcheck_with_a_missing_ca_bundle_is_a_tls_failure_not_a_crash(
        attest_service: Any, tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'url = "{attest_service.url}"\nca = "{tmp_path / "gone.pem"}"\n')
    res = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "agent", "netcheck",
                          "--config", str(cfg), "--json"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    report = json.loads(res.stdout)
    assert not report["reachable"]
    tls = next(s for s in report["steps"] if s["step"] == "tls")
    assert tls["result"] == "fail" and "gone.pem" in tls["detail"]


# --- the upgrader's proxy --------------------------------------------------------------


def test_the_upgrade_check_picks_its_proxy_by_libcurls_rules(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Health reports and upgrade checks go to the same monitor: the same proxy rules
    (bootwatch.agent.proxy, libcurl's) must choose for both.  libcurl ignores an upper-case
    HTTP_PROXY for http:// URLs; so must the upgrade check, which goes direct here."""
    import socket

    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from bootwatch.agent.proxy import choose_proxy
    from bootwatch.agent.upgrade import AgentUpgrader, OutcomeKind, UpgradeConfig

    asked: list[str] = []

    async def offer(request: Request) -> Response:
        asked.append(str(request.url))
        return Response(status_code=204)

    with socket.socket() as s:  # a proxy port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    for name in ("http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                 "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    key = tmp_path / "release.pub.pem"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    app = Starlette(routes=[Route("/api/v1/agent/releases/offer", offer, methods=["GET"])])
    with ThreadServer(app) as server:
        url = f"http://127.0.0.1:{server.port}"
        # the rule the daemon's health reports follow for this monitor: no proxy
        assert choose_proxy(url, configured=None, configured_no_proxy=None,
                            environ=dict(os.environ)).url is None
        upgrader = AgentUpgrader(UpgradeConfig(
            monitor_url=url, release_public_keys=(key,), vm_id="vm-1",
            install_root=tmp_path / "root", state_dir=tmp_path / "state"),
            running_version="0.1.0")
        try:
            outcome = upgrader.run_check(apply=False)
        finally:
            upgrader.close()
    assert outcome.kind is OutcomeKind.NO_OFFER, outcome.message
    assert len(asked) == 1


def test_backoffs_are_jittered_never_shorter(tmp_path: Path) -> None:
    """A fleet that lost its network (or was answered 429 behind one address) at once
    used to come back at once, in waves: 30 s, 60 s ... exactly.  Each agent now waits
    its backoff plus up to RETRY_JITTER of it more, at random, never less."""
    from bootwatch.agent.daemon import BACKOFF_BASE, RETRY_JITTER

    waits = []
    for i in range(8):
        run = tmp_path / f"vm{i}"
        run.mkdir()
        result = _once(run, url="https://127.0.0.1:1", tcti="device:/nonexistent/tpm",
                       log=str(run / "no-such-log.bin"))
        assert result.health is HealthStatus.PLATFORM_ERROR
        state = json.loads((run / "state" / "agent-state.json").read_text())
        waits.append(state["backoff_until"] - state["last_attempt"])
    assert all(BACKOFF_BASE <= w <= BACKOFF_BASE * (1 + RETRY_JITTER) + 0.5 for w in waits)
    assert len({round(w, 2) for w in waits}) > 1, waits


def test_a_jittered_24h_retry_after_survives_a_restart(tmp_path: Path) -> None:
    """A 24 h Retry-After (the cap) plus its jitter was saved past the 24 h a restart
    believes, and the restarted agent dropped it as "saved under a wrong clock" and
    attested at once into the service that had asked it to wait (found in review)."""
    import time

    from bootwatch.agent.daemon import RETRY_JITTER
    from bootwatch.agent.transport import MAX_RETRY_AFTER

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    now = time.time()
    until = now + MAX_RETRY_AFTER * (1 + RETRY_JITTER) - 60
    (state_dir / "agent-state.json").write_text(json.dumps(
        {"boot_id": "other-boot", "boot_counter": 1, "last_attempt": now - 5,
         "consecutive_failures": 1, "backoff_until": until, "cycles": 1}))
    overrides = {"state_dir": str(state_dir), "url": "https://127.0.0.1:1"}
    daemon = AgentDaemon(load_config(None, environ={}, overrides=overrides), environ={},
                         boot_id=lambda: "this-boot")
    assert daemon._first_due(daemon.store.load()) == until


def test_a_cycle_child_killed_while_writing_its_result_is_a_failed_cycle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle child killed from outside (the OOM killer, kill -9) while writing a result
    larger than the pipe's buffer left a truncated pickle, and unpickling it ended the
    daemon with a traceback (found in review).  A real forked child, killed by the test
    after the parent's first read."""
    import signal
    import time

    import bootwatch.agent.daemon as d
    from bootwatch.agent.status import ProvisioningStatus, StatusReport

    overrides = {"state_dir": str(tmp_path / "state"), "url": "https://127.0.0.1:1",
                 "cycle_in_child": "true"}
    daemon = AgentDaemon(load_config(None, environ={}, overrides=overrides), environ={})
    daemon.store.ensure_dir()

    def big_cycle(target: Any) -> Any:
        time.sleep(0.2)  # the parent's first read comes before the rest is written
        return d.CycleResult(health=HealthStatus.HEALTHY,
                             status=StatusReport(ProvisioningStatus.SUCCESS, "x" * 300_000))

    monkeypatch.setattr(daemon, "_cycle", big_cycle)
    child: list[int] = []
    real_fork, real_read = os.fork, os.read

    def fork() -> int:
        pid = real_fork()
        child.append(pid)
        return pid

    def read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        if child and data:
            os.kill(child.pop(), signal.SIGKILL)  # mid-write
        return data

    monkeypatch.setattr(d.os, "fork", fork)
    monkeypatch.setattr(d.os, "read", read)
    result = daemon._cycle_in_child(None)  # type: ignore[arg-type]
    assert result.health is HealthStatus.PLATFORM_ERROR
    assert "killed by signal 9" in result.status.message
