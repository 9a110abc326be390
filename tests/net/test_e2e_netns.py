"""End to end in network namespaces: blocked attestation, diagnosed and fixed.

A "svc" namespace runs ``bootwatch service run`` on its veth address; a "vm"
namespace runs ``bootwatch agent attest --lab-vm`` (the lab VM's swtpm is started by
the agent inside the vm namespace, on that namespace's own loopback).  The vm
namespace gets an output chain with policy drop (loopback allowed, like a host
firewall or an NSG's deny): the agent fails naming ``tcp_connect``, ``explain``
names the deciding rule, the remediation for that hop carries the generated
nftables rules; once they are loaded the same attestation is permitted.  Then the
same through squid (run by the test on a scratch config in the svc namespace),
with the VM allowed to reach only the proxy: refused with the proxy's 403 without
the generated ACL, permitted with it.

The agent reaches the proxy through ``HTTPS_PROXY``, which httpx (the agent's HTTP
client) honours by default; it reports the proxy's refusal as the step
``protocol`` with squid's ``403 Forbidden`` in the message (a ``proxy_connect`` step
is the agent issue's to add).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootwatch.net.remediation import remediation_for
from bootwatch.net.rules import RuleFormat
from bootwatch.net.servicetag import decode_document
from bootwatch.protocol.health import FailedHop

from .conftest import VmSvc

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[2].parent
                             / "shared"))
LOG = SHARED / "corpus" / "eventlogs" / "go-tpm-tools" / "cos-101-amd-sev.bin"
BW = [sys.executable, "-m", "bootwatch.cli.main"]
PORT = 8443
DROP_ALL = """table inet filter {
  chain output {
    type filter hook output priority 0; policy drop;
    oif "lo" accept
  }
}
"""

pytestmark = [pytest.mark.swtpm, pytest.mark.slow]


def _bw(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BW, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _wait_port(ns: Any, host: str, port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    probe = ("import socket,sys\ns=socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"
             "\ns.close()")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        if ns.run(sys.executable, "-c", probe, host, str(port), check=False).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} did not listen on {host}:{port}")


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _attest(vm_svc: VmSvc, env: dict[str, str], ca: Path, **extra_env: str) -> dict[str, Any]:
    argv = vm_svc.vm.exec_args(*BW, "agent", "attest", "--lab-vm", "cos", "--url",
                               f"https://{vm_svc.svc_ip}:{PORT}", "--ca", str(ca), "--json")
    out = subprocess.run(argv, capture_output=True, text=True, env={**env, **extra_env},
                         timeout=120)
    assert out.stdout, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    result["exit"] = out.returncode
    return result


@pytest.fixture
def e2e(vm_svc: VmSvc, tmp_path: Path) -> Iterator[tuple[VmSvc, dict[str, str], Path, Path]]:
    """The service running in svc, a lab VM 'cos' ready for the vm namespace."""
    if shutil.which("swtpm") is None:
        pytest.fail("swtpm not installed (run scripts/setup)")
    env = {**os.environ, "BOOTWATCH_LAB_DIR": str(tmp_path / "lab"), "NO_PROXY": "",
           "BOOTWATCH_SHARED": str(SHARED)}
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY",
                "http_proxy"):
        env.pop(key, None)
    made = _bw("lab", "vm", "create", "cos", "--log", str(LOG), env=env)
    assert made.returncode == 0, made.stderr
    templates = tmp_path / "templates.json"
    tpl = _bw("log", "template", str(LOG), "--name", "cos-v10", env=env)
    assert tpl.returncode == 0, tpl.stderr
    templates.write_text(tpl.stdout)
    lab_ca = _bw("lab", "ca", env=env).stdout.strip()
    data = tmp_path / "svc"
    argv = vm_svc.svc.exec_args(
        *BW, "service", "run", "--host", vm_svc.svc_ip, "--port", str(PORT),
        "--data-dir", str(data), "--trust-anchors", lab_ca,
        "--dbx-data", str(SHARED / "corpus" / "secureboot" / "dbx_info_msft_latest.json"),
        "--secureboot-templates", str(templates), "--service-tag-name", "Bootwatch")
    with _process(argv, env, tmp_path / "service.log") as proc:
        _wait_port(vm_svc.svc, vm_svc.svc_ip, PORT, proc, "bootwatch service")
        yield vm_svc, env, data / "tls" / "dev-ca.pem", tmp_path


def test_nftables_drop_then_generated_rules(e2e: tuple[VmSvc, dict[str, str], Path, Path]) -> None:
    vm_svc, env, ca, tmp = e2e
    url = f"https://{vm_svc.svc_ip}:{PORT}"
    # unfiltered: the VM reaches the service (and reads its service tag)
    assert _attest(vm_svc, env, ca)["verdict"] == "permit"
    tag = subprocess.run(vm_svc.vm.exec_args(*BW, "network", "service-tag", "--from", url,
                                             "--ca", str(ca)),
                         capture_output=True, text=True, env=env, timeout=60)
    assert tag.returncode == 0, tag.stderr
    doc = decode_document(tag.stdout.encode(), url)
    assert [str(p) for p in doc.tag("Bootwatch").address_prefixes] == [f"{vm_svc.svc_ip}/32"]
    assert doc.ports == (PORT,)

    # the operator's host firewall drops everything outbound but loopback
    drop = tmp / "drop.nft"
    drop.write_text(DROP_ALL)
    vm_svc.vm.run("nft", "-f", str(drop))
    blocked = _attest(vm_svc, env, ca)
    assert blocked["exit"] == 2 and blocked["verdict"] == "unreachable"
    assert blocked["step"] == "tcp_connect", blocked

    # explain names the deciding rule and prints the fix
    explain = _bw("network", "explain", "--rules", str(drop), "--format", "nftables",
                  "--to", url, "--from", str(_save(tmp, tag.stdout)), "--json", env=env)
    assert explain.returncode == 1, explain.stderr
    verdict = json.loads(explain.stdout)
    assert verdict["allowed"] is False and verdict["rule"]["name"] == "policy drop"
    assert verdict["where"] == "inet filter output"

    # the monitor's recommendation for that hop carries the generated rules
    rem = remediation_for(doc, FailedHop(blocked["step"]), (RuleFormat.NFTABLES,),
                          failed_target=f"{vm_svc.svc_ip}:{PORT}")
    assert rem is not None and rem.title == "Allow outbound attestation traffic"
    nft_rules = rem.rules[0].text
    assert f"ip daddr {{ {vm_svc.svc_ip}/32 }} tcp dport {{ {PORT} }} accept" in nft_rules
    # the CLI writes the same rules from the service's URL
    cli_rules = _bw("network", "rules", "--format", "nftables", "--from", str(tmp / "doc.json"),
                    env=env)
    assert cli_rules.stdout == nft_rules
    allow = tmp / "allow.nft"
    allow.write_text(nft_rules)
    vm_svc.vm.run("nft", "-f", str(allow))

    explain = _bw("network", "explain", "--rules", str(drop), "--format", "nftables",
                  "--to", url, env=env)
    assert explain.returncode == 1  # the file alone still drops ...
    both = tmp / "both.nft"
    both.write_text(DROP_ALL + nft_rules.replace("#!/usr/sbin/nft -f\n", ""))
    explain = _bw("network", "explain", "--rules", str(both), "--format", "nftables",
                  "--to", url, "--json", env=env)
    assert explain.returncode == 0, explain.stdout  # ... with the generated rules it passes
    assert json.loads(explain.stdout)["rule"]["name"] == "bootwatch: AllowBootwatchOutbound"

    fixed = _attest(vm_svc, env, ca)
    assert fixed["exit"] == 0 and fixed["verdict"] == "permit", fixed
    assert fixed["claims"]["secureboot"] is True


def _save(tmp: Path, text: str) -> Path:
    path = tmp / "doc.json"
    path.write_text(text)
    return path


SQUID_BASE = """http_port {ip}:3128
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log stdio:{d}/access.log
coredump_dir {d}
pinger_enable off
shutdown_lifetime 0 seconds
cache deny all
{snippet}
http_access deny all
"""


@contextlib.contextmanager
def _squid(vm_svc: VmSvc, env: dict[str, str], snippet: str) -> Iterator[Path]:
    """squid in the svc namespace on a scratch config (run as the proxy user)."""
    work = Path(tempfile.mkdtemp(prefix="bwsquid"))
    try:
        proxy = pwd.getpwnam("proxy")
        os.chown(work, proxy.pw_uid, proxy.pw_gid)
        conf = work / "squid.conf"
        conf.write_text(SQUID_BASE.format(ip=vm_svc.svc_ip, d=work, snippet=snippet))
        parsed = subprocess.run(["squid", "-k", "parse", "-f", str(conf)], capture_output=True,
                                text=True, timeout=60)
        assert parsed.returncode == 0, parsed.stderr
        argv = vm_svc.svc.exec_args("squid", "-N", "-f", str(conf))
        with _process(argv, env, work / "stdout.log") as proc:
            _wait_port(vm_svc.svc, vm_svc.svc_ip, 3128, proc, "squid")
            yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_squid_blocks_then_generated_acl(e2e: tuple[VmSvc, dict[str, str], Path, Path]) -> None:
    vm_svc, env, ca, tmp = e2e
    if shutil.which("squid") is None:
        pytest.fail("squid not installed (run scripts/setup)")
    url = f"https://{vm_svc.svc_ip}:{PORT}"
    # the svc namespace is not reachable from the host: read the tag inside vm
    tag = subprocess.run(vm_svc.vm.exec_args(*BW, "network", "service-tag", "--from", url,
                                             "--ca", str(ca)),
                         capture_output=True, text=True, env=env, timeout=60)
    assert tag.returncode == 0, tag.stderr
    doc_file = _save(tmp, tag.stdout)
    # the VM may talk only to the proxy
    vm_svc.vm.run("nft", "-f", "-", input_text=DROP_ALL.replace(
        'oif "lo" accept', f'oif "lo" accept\n    ip daddr {vm_svc.svc_ip} tcp dport 3128 accept'))
    proxy = {"HTTPS_PROXY": f"http://{vm_svc.svc_ip}:3128"}
    direct = _attest(vm_svc, env, ca)
    assert direct["step"] == "tcp_connect"  # no way around the proxy

    with _squid(vm_svc, env, "") as work:
        refused = _attest(vm_svc, env, ca, **proxy)
        assert refused["exit"] == 2 and refused["verdict"] == "unreachable", refused
        assert "403" in refused["reason"], refused
        # the daemon's provisioning status names the proxy's answer too
        state = tmp / "agent-state"
        run = subprocess.run(vm_svc.vm.exec_args(
            *BW, "agent", "run", "--once", "--lab-vm", "cos", "--url", url, "--ca", str(ca),
            "--state-dir", str(state)), capture_output=True, text=True,
            env={**env, **proxy}, timeout=120)
        assert run.returncode == 2, run.stdout + run.stderr
        status = json.loads((state / "status" / "0.status").read_text())[0]["status"]
        assert status["status"] == "error" and "403" in status["formattedMessage"]["message"]
        log = (work / "access.log").read_text()
        assert "TCP_DENIED/403" in log and f"CONNECT {vm_svc.svc_ip}:{PORT}" in log

    snippet = _bw("network", "rules", "--format", "squid", "--from", str(doc_file), env=env)
    assert snippet.returncode == 0, snippet.stderr
    with _squid(vm_svc, env, snippet.stdout) as work:
        allowed = _attest(vm_svc, env, ca, **proxy)
        assert allowed["exit"] == 0 and allowed["verdict"] == "permit", allowed
        assert f"CONNECT {vm_svc.svc_ip}:{PORT}" in (work / "access.log").read_text()


def test_namespace_set_cleans_up_on_failure() -> None:
    """Every namespace made is deleted, also when set-up fails half way."""
    from bootwatch.errors import ConfigError
    from bootwatch.net.netns import NamespaceSet

    from .conftest import require_netns

    require_netns()
    nsset = NamespaceSet()
    names: list[str] = []
    with pytest.raises(ConfigError), nsset:
        names += [nsset.add("a").name, nsset.add("b").name]
        nsset.link(nsset.made[0], "10.99.0.1/30", nsset.made[1], "not-an-address")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert names and not any(n in listed for n in names)
    assert socket.gethostname() not in names
