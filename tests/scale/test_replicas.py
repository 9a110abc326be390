"""Stateless service replicas on one PostgreSQL (issue 15, item 1): two real
``bootwatch service run`` processes behind Debian's HAProxy; a policy written through
one replica, a key rotated by the CLI and an AIK-independent change all reach the
other replica through LISTEN/NOTIFY, long before the (deliberately long) cache TTL.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from bwproc import Proc, free_port, wait_port
from bwservers import PG_URL, pg_schema

pytestmark = [pytest.mark.swtpm, pytest.mark.slow, pytest.mark.postgres]

TOKEN = "replica-admin-token-0123456789abcdef"
Q = "?api-version=2020-10-01"
DENY_ALL = "version= 1.0;\nauthorizationrules\n{\n    => deny();\n};\nissuancerules\n{\n};\n"
#: far longer than the test: only a notification can make the other replica notice
CACHE_TTL = "600"


@pytest.fixture
def schema() -> Iterator[str]:
    with pg_schema() as name:
        yield name


def haproxy_config(port: int, backends: list[int]) -> str:
    """The example of docs/scale.md, on loopback ports."""
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check inter 1s fall 2 rise 1"
                        for i, p in enumerate(backends))
    return f"""global
    maxconn 1024
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend attestation
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
"""


def _cli(env: dict[str, str], *args: str) -> str:
    import os
    import sys

    res = subprocess.run([sys.executable, "-c", "from bootwatch.cli.main import main; main()",
                          *args], env=dict(os.environ, **env), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def _attest(url: str, body: bytes, provider: str = "") -> httpx.Response:
    prefix = f"/providers/{provider}" if provider else ""
    return httpx.post(f"{url}{prefix}/attest/AzureGuest{Q}", content=body,
                      headers={"content-type": "application/json"}, timeout=30)


def _kids(url: str) -> set[str]:
    r = httpx.get(f"{url}/certs", timeout=30)
    assert r.status_code == 200, r.text
    return {k["kid"] for k in r.json()["keys"]}


def _verdicts(url: str) -> float:
    """Attestations this replica answered (its own /metrics)."""
    r = httpx.get(f"{url}/metrics", timeout=30)
    total = 0.0
    for line in r.text.splitlines():
        m = re.match(r"bootwatch_attestation_verdicts_total\{[^}]*\} ([0-9.e+]+)", line)
        if m:
            total += float(m.group(1))
    return total


def test_replicas_behind_haproxy_share_policies_and_keys_at_once(
    request_body: tuple[bytes, Path], schema: str, tmp_path: Path,
) -> None:
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (run scripts/setup)")
    body, anchors = request_body
    env = {"BOOTWATCH_ADMIN_TOKENS": TOKEN, "BOOTWATCH_AT_REST_KEY": secrets.token_hex(32),
           "XDG_DATA_HOME": str(tmp_path / "xdg")}
    db = ["--db", PG_URL, "--db-schema", schema]
    _cli(env, "service", "migrate", *db, "--data-dir", str(tmp_path / "cli"))
    _cli(env, "provider", "create", "team", "--trust-model", "aad", *db,
         "--data-dir", str(tmp_path / "cli"))
    ports = [free_port(), free_port()]
    lb_port = free_port()
    # behind a balancer every replica names the balancer's URL as its issuer
    replicas = [
        Proc(["service", "run", "--insecure-http", "--port", str(p), *db,
              "--data-dir", str(tmp_path / f"r{i}"), "--trust-anchors", str(anchors),
              "--rate-limit", "0", "--cache-ttl", CACHE_TTL,
              "--public-url", f"http://127.0.0.1:{lb_port}"],
             port=p, log=tmp_path / f"r{i}.log", env=env)
        for i, p in enumerate(ports)]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(lb_port, ports))
    lb: subprocess.Popen[bytes] | None = None
    try:
        for r in replicas:
            r.start()
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        lb = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        wait_port(lb_port)
        front = f"http://127.0.0.1:{lb_port}"
        # both replicas up: every attestation through the balancer is answered, by both
        time.sleep(1.5)  # HAProxy's first health checks
        for _ in range(8):
            r = _attest(front, body, "team")
            assert r.status_code == 200, r.text
        assert _verdicts(a) >= 1 and _verdicts(b) >= 1, "HAProxy used one replica only"

        # both replicas have cached the provider; a policy written through A ...
        assert _attest(b, body, "team").status_code == 200
        from bootwatch.policy import unsigned_policy_jws

        put = httpx.put(f"{a}/providers/team/policies/AzureGuest{Q}",
                        content=unsigned_policy_jws(DENY_ALL),
                        headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert put.status_code == 200, put.text
        # ... is in force on B within a second, not after B's 600 s cache time
        deadline = time.monotonic() + 5
        while _attest(b, body, "team").status_code == 200:
            assert time.monotonic() < deadline, "replica B still permits under the old policy"
            time.sleep(0.1)
        denied = _attest(b, body, "team")
        assert denied.status_code == 400 and "PolicyEvaluationError" in denied.text

        # a signing key rotated by the CLI: both replicas publish and use the new key
        before = _kids(b)
        out = _cli(env, "provider", "rotate-key", "team", "--publish-ahead", "0", *db,
                   "--data-dir", str(tmp_path / "cli"))
        new_kid = out.split("new key ", 1)[1].split(" ", 1)[0]
        assert new_kid not in before
        deadline = time.monotonic() + 5
        while not all(new_kid in _kids(u + "/providers/team") for u in (a, b)):
            assert time.monotonic() < deadline, "a replica does not publish the rotated key"
            time.sleep(0.1)
        ok = _attest(a, body)  # the shared provider is untouched
        assert ok.status_code == 200
        # a policy reset through B: B signs its answer with the rotated key, which A
        # publishes (a token from one replica verifies with another's keys)
        reset = httpx.post(f"{b}/providers/team/policies/AzureGuest:reset{Q}",
                           content="eyJhbGciOiJub25lIn0..",
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert reset.status_code == 200, reset.text
        token = reset.json()["token"]
        assert jwt.get_unverified_header(token)["kid"] == new_kid
        jwks = httpx.get(f"{a}/providers/team/certs", timeout=30).json()
        key = next(k for k in jwks["keys"] if k["kid"] == new_kid)
        claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"],
                            options={"verify_aud": False})
        assert claims["x-ms-policy-result"] == "Removed"
        # ... and A permits again at once (the reset reached it)
        deadline = time.monotonic() + 5
        while _attest(a, body, "team").status_code != 200:
            assert time.monotonic() < deadline, "replica A still denies after the reset on B"
            time.sleep(0.1)
    finally:
        if lb is not None:
            lb.terminate()
            lb.wait(timeout=30)
        for r in replicas:
            r.stop()
