"""Failure hops and proxies with a real tinyproxy (Debian's tinyproxy-bin) on loopback:
attestation through the proxy, a proxy refusing CONNECT, DNS, closed port, wrong CA;
netcheck step by step."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootwatch.agent.config import load_config
from bootwatch.agent.daemon import AgentDaemon
from bootwatch.agent.netcheck import netcheck
from bootwatch.protocol.health import FailedHop, HealthStatus

pytestmark = pytest.mark.swtpm
SECRET = "s3cret-pw-9f2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tinyproxy:
    def __init__(self, tmp: Path, extra: str = "") -> None:
        binary = shutil.which("tinyproxy")
        if binary is None:
            pytest.fail("tinyproxy not installed (scripts/setup installs tinyproxy-bin)")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = tmp / f"tinyproxy-{self.port}.conf"
        conf.write_text(
            f"Port {self.port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 20\n"
            f"LogLevel Info\nLogFile \"{tmp}/tinyproxy-{self.port}.log\"\n"
            f"Allow 127.0.0.1\n{extra}"
        )
        self.proc = subprocess.Popen([binary, "-d", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        pytest.fail("tinyproxy did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    p = Tinyproxy(tmp_path)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def auth_proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    p = Tinyproxy(tmp_path, f"BasicAuth agent {SECRET}\n")
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def strict_proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    """A proxy that allows CONNECT to port 443 only: it refuses ours."""
    p = Tinyproxy(tmp_path, "ConnectPort 443\n")
    try:
        yield p
    finally:
        p.stop()


def _cycle(svc: Any, vm: Any, tmp_path: Path, *, environ: dict[str, str] | None = None,
           monitor: Any = None, **keys: Any) -> Any:
    overrides: dict[str, Any] = {
        "url": svc.url, "ca": str(svc.ca), "lab_vm": vm.name, "lab_dir": str(svc.lab.root),
        "state_dir": str(tmp_path / "state"), "interval": "5", "timeout": "5",
    }
    if monitor is not None:
        overrides["monitor_url"] = monitor.url
    overrides.update(keys)
    loaded = load_config(None, environ=environ or {}, overrides=overrides)
    return AgentDaemon(loaded, environ=environ or {}).run_once()


def _message(tmp_path: Path) -> str:
    doc = json.loads((tmp_path / "state" / "status" / "0.status").read_text())
    return str(doc[0]["status"]["formattedMessage"]["message"])


def test_attestation_through_a_proxy_from_the_environment(
        attest_service: Any, cos_vm: Any, proxy: Tinyproxy, monitor: Any,
        tmp_path: Path) -> None:
    env = {"HTTPS_PROXY": proxy.url, "NO_PROXY": "monitor.invalid"}
    # the monitor is plain http: https_proxy does not apply to it (libcurl's rule)
    result = _cycle(attest_service, cos_vm, tmp_path, environ=env, monitor=monitor)
    assert result.health is HealthStatus.HEALTHY, result.status.message
    log = (tmp_path / f"tinyproxy-{proxy.port}.log").read_text()
    assert f"CONNECT 127.0.0.1:{attest_service.port}" in log or "CONNECT" in log
    assert monitor.state.reports[-1].health_status is HealthStatus.HEALTHY


def test_proxy_credentials_work_and_are_never_shown(
        attest_service: Any, cos_vm: Any, auth_proxy: Tinyproxy, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    good = f"http://agent:{SECRET}@127.0.0.1:{auth_proxy.port}"
    result = _cycle(attest_service, cos_vm, tmp_path, proxy=good)
    assert result.health is HealthStatus.HEALTHY, result.status.message
    bad = f"http://agent:wrong-{SECRET}@127.0.0.1:{auth_proxy.port}"
    result = _cycle(attest_service, cos_vm, tmp_path / "b", proxy=bad)
    assert result.health is HealthStatus.PLATFORM_ERROR
    assert result.report.failed_hop is FailedHop.PROXY_CONNECT
    # tinyproxy 1.11 answers a bad BasicAuth with 401 (not 407): the proxy's own words
    assert "the proxy answered 401 Unauthorized" in result.status.message
    for text in (result.status.message, _message(tmp_path / "b"), caplog.text,
                 (tmp_path / "b" / "state" / "agent-state.json").read_text()):
        assert SECRET not in text


def test_a_proxy_refusing_connect_is_named_with_its_answer(
        attest_service: Any, cos_vm: Any, strict_proxy: Tinyproxy, monitor: Any,
        tmp_path: Path) -> None:
    result = _cycle(attest_service, cos_vm, tmp_path, proxy=strict_proxy.url, monitor=monitor)
    assert result.exit_code == 2
    message = _message(tmp_path)
    assert message.startswith(
        f"GuestAttestation provisioning failed: proxy CONNECT to "
        f"https://127.0.0.1:{attest_service.port} through {strict_proxy.url} failed: "
        "the proxy answered 403")
    report = monitor.state.reports[-1]
    assert report.failed_hop is FailedHop.PROXY_CONNECT
    assert report.failed_target == f"https://127.0.0.1:{attest_service.port}"


def test_each_failure_hop_has_its_own_message(attest_service: Any, cos_vm: Any,
                                               monitor: Any, tmp_path: Path) -> None:
    closed = _free_port()
    cases = {
        "dns": ({"url": "https://no-such-host.invalid"},
                "GuestAttestation provisioning failed: DNS lookup of no-such-host.invalid "
                "(for https://no-such-host.invalid:443) failed"),
        "tcp_connect": ({"url": f"https://127.0.0.1:{closed}"},
                        f"GuestAttestation provisioning failed: TCP connection to "
                        f"https://127.0.0.1:{closed} failed: Connection refused"),
        # a wrong CA (the lab's): OpenSSL's verify message is quoted
        "tls": ({"ca": str(attest_service.lab.ca_cert_path)},
                f"GuestAttestation provisioning failed: TLS handshake with "
                f"https://127.0.0.1:{attest_service.port} failed: certificate verify failed "
                "(self-signed certificate in certificate chain)"),
    }
    seen = set()
    for hop, (keys, expected) in cases.items():
        result = _cycle(attest_service, cos_vm, tmp_path / hop, monitor=monitor, **keys)
        assert result.exit_code == 2
        assert _message(tmp_path / hop).startswith(expected), _message(tmp_path / hop)
        assert monitor.state.reports[-1].failed_hop is FailedHop(hop)
        seen.add(_message(tmp_path / hop))
    assert len(seen) == len(cases)


def test_a_replaced_ca_bundle_is_read_again(attest_service: Any, cos_vm: Any,
                                           tmp_path: Path) -> None:
    """TLS contexts are built once per CA file (bootwatch.agent.transport.TlsContexts):
    a bundle replaced in place must be read again, and an unreadable one named."""
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(attest_service.lab.ca_cert_path.read_bytes())  # the wrong CA
    first = _cycle(attest_service, cos_vm, tmp_path / "a", ca=str(bundle))
    assert first.exit_code == 2
    assert "certificate verify failed" in first.status.message
    bundle.write_bytes(attest_service.ca.read_bytes() + b"\n")  # the right one, replaced
    second = _cycle(attest_service, cos_vm, tmp_path / "b", ca=str(bundle))
    assert second.health is HealthStatus.HEALTHY, second.status.message
    bundle.unlink()
    third = _cycle(attest_service, cos_vm, tmp_path / "c", ca=str(bundle))
    assert third.exit_code == 2
    assert f"cannot load the CA bundle {bundle}: No such file or directory" in \
        third.status.message


def test_netcheck_steps_and_exit_codes(attest_service: Any, strict_proxy: Tinyproxy) -> None:
    ok = netcheck(attest_service.url, ca=attest_service.ca, environ={})
    assert ok.reachable and [s.name for s in ok.steps] == [
        "dns", "proxy", "tcp_connect", "tls", "http", "clock"]
    tls = next(s for s in ok.steps if s.name == "tls")
    assert tls.lines and "subject" in tls.lines[0]
    bad = netcheck(attest_service.url, environ={})
    assert not bad.reachable and bad.failed is not None and bad.failed.name == "tls"
    assert "certificate verify failed (self-signed certificate in certificate chain)" \
        in bad.verdict
    assert any(line.startswith("presented: ") for line in bad.failed.lines)
    refused = netcheck(attest_service.url, ca=attest_service.ca,
                       environ={"https_proxy": strict_proxy.url})
    assert refused.failed is not None and refused.failed.name == "proxy_connect"
    assert "403" in refused.failed.detail
    cli = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "agent", "netcheck",
                          attest_service.url, "--ca", str(attest_service.ca), "--json"],
                         capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items()
                              if "proxy" not in k.lower()})
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["reachable"] is True
    cli = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "agent", "netcheck",
                          attest_service.url], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2
    assert cli.stdout.rstrip().splitlines()[-1].startswith("NOT REACHABLE")
