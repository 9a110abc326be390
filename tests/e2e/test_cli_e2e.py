"""The CLI end to end: ``bootwatch agent attest`` exit codes and ``bootwatch demo``."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.swtpm


def _bootwatch(*args: str, env: dict[str, str] | None = None,
               timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def _lab_env(e2e: Any) -> dict[str, str]:
    return {"BOOTWATCH_LAB_DIR": str(e2e.lab.root)}


def test_agent_attest_permit_json(e2e: Any, vms: Any) -> None:
    r = _bootwatch("agent", "attest", "--lab-vm", "cos", "--url", e2e.url, "--ca", str(e2e.ca),
                   "--payload", "nonce=abc", "--json", env=_lab_env(e2e))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "permit"
    assert out["claims"]["secureboot"] is True
    assert out["claims"]["x-ms-runtime"]["client-payload"] == {"nonce": "YWJj"}


def test_agent_attest_deny_exit_1(e2e: Any, vms: Any) -> None:
    r = _bootwatch("agent", "attest", "--lab-vm", "sboff", "--url", e2e.url, "--ca", str(e2e.ca),
                   env=_lab_env(e2e))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "DENY" in r.stdout and "PolicyEvaluationError" in r.stdout
    assert 'type=="' in r.stdout  # the rule text is shown, not eaten as markup


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize(
    ("url", "use_ca", "step"),
    [
        ("https://127.0.0.1:{closed}", True, "tcp_connect"),
        ("https://no-such-host.invalid:8443", True, "dns"),
        ("{url}", False, "tls"),
    ],
)
def test_agent_attest_unreachable_exit_2(e2e: Any, vms: Any, url: str, use_ca: bool,
                                         step: str) -> None:
    target = url.format(closed=_closed_port(), url=e2e.url)
    args = ["agent", "attest", "--lab-vm", "cos", "--url", target, "--json"]
    if use_ca:
        args += ["--ca", str(e2e.ca)]
    r = _bootwatch(*args, env=_lab_env(e2e))
    assert r.returncode == 2, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "unreachable" and out["step"] == step, out


def test_demo_runs(e2e: Any) -> None:
    # stdout is a pipe, not a terminal: no cell of the table may be cut (no COLUMNS hint)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "demo", "--corpus",
                        str(e2e.corpus)], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for name in ("azure-tl", "cos-web", "cos-idle", "ubuntu-sb-off", "tampered"):
        assert name in out
    assert "baseline_deviation" in out and "grub-lakitu.efi" in out and "SbatLevel" in out
    assert "is resolved; cos-web is healthy" in out
    assert "log_replay" in out and "stale" in out
    assert "Secure Boot should be enabled on supported virtual machines" in out
    assert "demo complete" in out
    # piped, nothing a person needs is cut: every digest of the diff is whole
    assert re.search(r"\b[0-9a-f]{64}\b", out), "the diff's digests are not printed whole"


def test_agent_attest_piped_output_is_whole(e2e: Any, vms: Any) -> None:
    env = {**_lab_env(e2e), "COLUMNS": "60"}  # even a narrow hint must not cut cells
    r = _bootwatch("agent", "attest", "--lab-vm", "cos", "--url", e2e.url, "--ca", str(e2e.ca),
                   env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("PERMITTED")
    assert "x-ms-azurevm-default-securebootkeysvalidated" in r.stdout
    assert "…" not in r.stdout
    r = _bootwatch("agent", "attest", "--lab-vm", "cos", "--url", e2e.url, env=_lab_env(e2e))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.startswith("UNREACHABLE (step: tls): ")
    assert "tls: tls:" not in r.stdout and r.stdout.count("tls") == 1, r.stdout


def test_windows_log_needs_its_sipa_pcrs_quoted(e2e: Any) -> None:
    """The Azure WS2019 log measures its debug/signing flags into PCR 12-14: quoting only
    PCR 0-7 leaves them unknown (deny on debuggersdisabled); quoting 0-7,11-14 permits,
    and so does the agent's default (0-7 plus every PCR 8-15 the log extends)."""
    e2e.lab.create_vm("ws2019", e2e.corpus / "maa/azure-guest-vm-derived/"
                      "azure-trusted-launch-ws2019.tcglog.bin")
    base = ["agent", "attest", "--lab-vm", "ws2019", "--url", e2e.url, "--ca", str(e2e.ca),
            "--json"]
    r = _bootwatch(*base, "--pcrs", "0-7", env=_lab_env(e2e))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "debuggersdisabled=false" in json.loads(r.stdout)["reason"]
    r = _bootwatch(*base, env=_lab_env(e2e))
    assert r.returncode == 0, r.stdout + r.stderr
    assert {11, 12, 13, 14} <= set(json.loads(r.stdout)["claims"]["x-ms-azurevm-attested-pcrs"])
    r = _bootwatch(*base, "--pcrs", "0-7,11-14", env=_lab_env(e2e))
    assert r.returncode == 0, r.stdout + r.stderr
    claims = json.loads(r.stdout)["claims"]
    assert claims["x-ms-azurevm-attested-pcrs"] == [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14]
    assert claims["x-ms-azurevm-debuggersdisabled"] is True
