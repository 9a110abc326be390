"""Operations: limits, rate limiting, health, metrics, OIDC bearer auth, CLI."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from bootwatch.service.auth import AttestCaller

Q = "?api-version=2020-10-01"
POLICY = "version= 1.0;\nauthorizationrules\n{\n    => permit();\n};\nissuancerules\n{\n};\n"


def test_oversized_body_is_413(service_factory: Any, h: Any) -> None:
    svc = service_factory(max_body_bytes=1000)
    with svc.client() as c:
        r = c.put(f"/policies/Tpm{Q}", content=b"x" * 5000)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "PayloadTooLarge"
        assert "1000 bytes" in r.json()["error"]["message"]

        def chunks() -> Any:  # no Content-Length: counted while streaming
            for _ in range(5):
                yield b"y" * 400

        admin = {"Authorization": f"Bearer {h.ADMIN_TOKEN}"}
        r = c.put(f"/policies/Tpm{Q}", content=chunks(), headers=admin)
        assert r.status_code == 413


def test_rate_limit_answers_429_with_retry_after(service_factory: Any) -> None:
    svc = service_factory(rate_limit_per_second=0.5, rate_limit_burst=3)
    with svc.client() as c:
        codes = [c.get(f"/certs{Q}").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        r = c.get(f"/certs{Q}")
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "TooManyRequests"
        # probes are not limited
        assert c.get("/healthz").status_code == 200


def test_health_ready_metrics(svc: Any) -> None:
    with svc.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}
        c.get(f"/certs{Q}")
        c.get(f"/providers/ghost/certs{Q}")
        text = c.get("/metrics").text
    assert 'bootwatch_http_requests_total{method="GET",route="/certs",status="200"}' in text
    assert 'status="404"' in text
    assert "bootwatch_http_request_duration_seconds_bucket" in text


def test_readyz_fails_when_database_is_gone(
    service_factory: Any, backend: Any, tmp_path: Any
) -> None:
    if backend.name != "sqlite":
        pytest.skip("checked once, on SQLite")
    from bootwatch.service.db import make_engine

    svc = service_factory()
    svc.state.db.engine.dispose()
    # a directory where the database file should be: every connection fails
    svc.state.db.engine = make_engine(f"sqlite:///{tmp_path}")
    with svc.client() as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


@pytest.fixture(scope="module")
def oidc_issuer(h: Any) -> Any:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = FastAPI()
    state: dict[str, str] = {}

    @app.get("/.well-known/openid-configuration")
    def meta() -> dict[str, Any]:
        return {"issuer": state["iss"], "jwks_uri": state["iss"] + "/keys"}

    @app.get("/keys")
    def keys() -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        jwk["kid"] = "k1"
        return {"keys": [jwk]}

    server = h.ThreadServer(app).__enter__()
    state["iss"] = f"http://127.0.0.1:{server.port}"

    def mint(roles: list[str], *, aud: str = "https://attest.azure.net", exp: int = 600) -> str:
        now = int(time.time())
        return jwt.encode(
            {
                "iss": state["iss"],
                "sub": "user-1",
                "aud": aud,
                "roles": roles,
                "iat": now,
                "exp": now + exp,
            },
            key,
            algorithm="RS256",
            headers={"kid": "k1"},
        )

    yield state["iss"], mint
    server.__exit__()


def test_without_a_configured_audience_tokens_must_be_for_maas_resource(
    service_factory: Any, oidc_issuer: Any
) -> None:
    """Found in review: with ``--oidc-issuer`` and no ``--oidc-audience`` the audience was
    not checked, so a token the issuer minted for any application whose roles named the
    write role (any tenant user can arrange that) changed policies."""
    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    issuer, mint = oidc_issuer

    def setup(state: Any) -> None:
        with state.db.session() as s:
            if s.get(ProviderRow, "oidcq") is None:
                create_provider(
                    s, state.sealer, "oidcq", kind=ProviderKind.CUSTOM, trust_model=TrustModel.AAD
                )

    svc = service_factory(setup, oidc_issuer=issuer)
    url = f"/providers/oidcq/policies/Tpm{Q}"
    with svc.client() as c:
        other = mint(["Attestation.Contributor"], aud="api://some-other-app")
        r = c.put(url, content=POLICY, headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 401 and "audience" in r.json()["error"]["message"].lower()
        ok = mint(["Attestation.Contributor"])  # aud https://attest.azure.net
        r = c.put(url, content=POLICY, headers={"Authorization": f"Bearer {ok}"})
        assert r.status_code == 200, r.text


def test_aad_bearer_tokens_from_an_openid_issuer(
    service_factory: Any, oidc_issuer: Any, signer1: Any
) -> None:
    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    issuer, mint = oidc_issuer

    def setup(state: Any) -> None:
        with state.db.session() as s:
            if s.get(ProviderRow, "oidcp") is None:
                create_provider(
                    s, state.sealer, "oidcp", kind=ProviderKind.CUSTOM, trust_model=TrustModel.AAD
                )

    svc = service_factory(setup, oidc_issuer=issuer, oidc_audience="https://attest.azure.net")
    url = f"/providers/oidcp/policies/Tpm{Q}"
    with svc.client() as c:
        ok = c.put(
            url,
            content=POLICY,
            headers={"Authorization": f"Bearer {mint(['Attestation.Contributor'])}"},
        )
        assert ok.status_code == 200, ok.text
        r = c.put(url, content=POLICY, headers={"Authorization": f"Bearer {mint(['Reader'])}"})
        assert r.status_code == 401 and "lacks the role" in r.json()["error"]["message"]
        r = c.put(
            url,
            content=POLICY,
            headers={"Authorization": f"Bearer {mint(['Attestation.Contributor'], aud='other')}"},
        )
        assert r.status_code == 401 and "audience" in r.json()["error"]["message"].lower()
        r = c.put(
            url,
            content=POLICY,
            headers={"Authorization": f"Bearer {mint(['Attestation.Contributor'], exp=-120)}"},
        )
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"].lower()
        forged_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(
            {
                "iss": issuer,
                "aud": "https://attest.azure.net",
                "roles": ["Attestation.Contributor"],
                "exp": int(time.time()) + 60,
            },
            forged_key,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        r = c.put(url, content=POLICY, headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401 and "signature" in r.json()["error"]["message"].lower()


def test_require_attest_auth_dependency(service_factory: Any, h: Any) -> None:
    """A provider created with attest auth: the dependency F's handlers use."""
    from bootwatch.service.app import create_app
    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    svc = service_factory()
    with svc.state.db.session() as s:
        if s.get(ProviderRow, "authp") is None:
            create_provider(
                s,
                svc.state.sealer,
                "authp",
                kind=ProviderKind.CUSTOM,
                trust_model=TrustModel.AAD,
                attest_auth_required=True,
            )
    app = create_app(svc.settings, state=svc.state)

    @app.get("/probe-attest-auth")
    def probe(principal: AttestCaller) -> dict[str, Any]:
        return {"principal": principal.name if principal else None}

    with h.ThreadServer(app) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/probe-attest-auth").json() == {"principal": None}
        r = httpx.get(f"{base}/providers/authp/probe-attest-auth")
        assert r.status_code == 401
        r = httpx.get(
            f"{base}/providers/authp/probe-attest-auth",
            headers={"Authorization": f"Bearer {h.ADMIN_TOKEN}"},
        )
        assert r.json() == {"principal": "admin"}


def _bootwatch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_cli_provider_create_list_rotate(tmp_path: Any, h: Any, signer1: Any, backend: Any) -> None:
    if backend.name != "sqlite":
        pytest.skip("CLI exercised once, on SQLite")
    cert = tmp_path / "signer.pem"
    cert.write_text(h.pem(signer1[1]))
    d = ["--data-dir", str(tmp_path / "data")]
    r = _bootwatch(
        "provider", "create", "contoso", "--trust-model", "isolated", "--signer", str(cert), *d
    )
    assert r.returncode == 0, r.stderr
    r = _bootwatch("provider", "create", "noisy", "--trust-model", "isolated", *d)
    assert r.returncode == 2 and "signer" in r.stderr
    r = _bootwatch("provider", "create", "contoso", "--trust-model", "aad", *d)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = _bootwatch("provider", "list", "--json", *d)
    import json

    rows = {p["name"]: p for p in json.loads(r.stdout)}
    assert rows["contoso"]["trust_model"] == "isolated" and rows["shared"]["kind"] == "shared"
    old = rows["contoso"]["kid"]
    r = _bootwatch("provider", "rotate-key", "contoso", "--overlap", "60", *d)
    assert r.returncode == 0 and old in r.stdout
    rows = {p["name"]: p for p in json.loads(_bootwatch("provider", "list", "--json", *d).stdout)}
    assert rows["contoso"]["kid"] != old


def test_cli_service_run_with_two_workers_over_tls(tmp_path: Any, backend: Any) -> None:
    if backend.name != "sqlite":
        pytest.skip("worker processes exercised once, on SQLite")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bootwatch.cli.main",
            "service",
            "run",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ca = data / "tls" / "dev-ca.pem"
        deadline = time.monotonic() + 40
        while True:
            try:
                r = httpx.get(
                    f"https://127.0.0.1:{port}/readyz",
                    verify=ssl.create_default_context(cafile=str(ca)),
                    timeout=2,
                )
                if r.status_code == 200:
                    break
            except (httpx.HTTPError, OSError):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                err = proc.stderr.read() if proc.poll() is not None else ""
                raise AssertionError(f"service did not start: {err}")
            time.sleep(0.2)
        for _ in range(6):
            meta = httpx.get(
                f"https://localhost:{port}/.well-known/openid-configuration",
                verify=ssl.create_default_context(cafile=str(ca)),
            ).json()
            assert meta["issuer"] == f"https://localhost:{port}"
        text = httpx.get(
            f"https://127.0.0.1:{port}/metrics", verify=ssl.create_default_context(cafile=str(ca))
        ).text
        assert "bootwatch_http_requests_total" in text
    finally:
        proc.terminate()
        try:
            _out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    lines = [ln for ln in err.splitlines() if ln.startswith("{")]
    assert any('"msg": "request"' in ln and '"status": 200' in ln for ln in lines), err[-2000:]
    assert not any("Bearer" in ln for ln in lines)


def test_insecure_http_only_on_loopback() -> None:
    from bootwatch.errors import ConfigError
    from bootwatch.service.server import tls_files
    from bootwatch.service.settings import Settings

    assert tls_files(Settings(insecure_http=True, host="127.0.0.1")) is None
    with pytest.raises(ConfigError, match="loopback"):
        tls_files(Settings(insecure_http=True, host="0.0.0.0"))


def test_attestation_fast_path_keeps_the_edge(service_factory: Any, h: Any) -> None:
    """/attest/AzureGuest is answered in front of FastAPI: the edge's size limit (declared
    and streamed), rate limit, metrics label and the 405 for other methods still apply."""
    svc = service_factory(max_body_bytes=1000, rate_limit_per_second=0.5, rate_limit_burst=4)
    with svc.client() as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=b"x" * 5000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "PayloadTooLarge"

        def chunks() -> Any:  # no Content-Length: counted while streaming
            for _ in range(5):
                yield b"y" * 400

        r = c.post(f"/providers/shared/attest/AzureGuest{Q}", content=chunks())
        assert r.status_code == 413 and r.json()["error"]["code"] == "PayloadTooLarge"
        r = c.get(f"/attest/AzureGuest{Q}")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert r.headers["x-ms-error-code"] == "MethodNotAllowed"
        r = c.post(f"/attest/AzureGuest{Q}", content=b"{}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter"
        assert r.headers["x-ms-maa-service-version"]
        r = c.post(f"/attest/AzureGuest{Q}", content=b"{}")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        text = c.get("/metrics").text
    assert 'route="/attest/AzureGuest",status="413"' in text
    assert 'route="/attest/AzureGuest",status="400"' in text
