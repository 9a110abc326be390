"""Issue 9 item 7: /openapi.json describes every route (the AzureGuest fast path and the
provider prefix included), and schemathesis, driving the real HTTPS service on loopback
from that document, gets no 5xx and an MAA error body on every error answer."""

from __future__ import annotations

from typing import Any

import pytest
from schemathesis_run import run_every_operation

Q = "?api-version=2020-10-01"
#: examples per operation: enough to reach every parameter and body shape once or twice,
#: small enough for the suite (23 operations, one service per backend)
MAX_EXAMPLES = 6


def test_openapi_lists_every_route_with_the_fast_path(svc: Any) -> None:
    with svc.client() as c:
        r = c.get("/openapi.json")
        assert r.status_code == 200, r.text
        doc = r.json()
        paths = doc["paths"]
        for path, method in [
            ("/attest/AzureGuest", "post"),
            ("/attest/Tpm", "post"),
            ("/.well-known/openid-configuration", "get"),
            ("/certs", "get"),
            ("/policies/{attestation_type}", "get"),
            ("/policies/{attestation_type}", "put"),
            ("/policies/{attestation_type}:reset", "post"),
            ("/certificates", "get"),
            ("/certificates:add", "post"),
            ("/certificates:remove", "post"),
            ("/healthz", "get"),
            ("/readyz", "get"),
            ("/metrics", "get"),
            ("/providers/{provider}/attest/AzureGuest", "post"),
            ("/providers/{provider}/policies/{attestation_type}", "put"),
        ]:
            assert method in paths.get(path, {}), (path, method)
        ag = paths["/attest/AzureGuest"]["post"]
        assert ag["requestBody"]["content"]["application/json"]["schema"]["required"] == [
            "AttestationInfo"
        ]
        assert "x-ms-error-code" in ag["responses"]["400"]["headers"]
        put = paths["/policies/{attestation_type}"]["put"]
        names = {p["name"] for p in put["parameters"]}
        assert {"allowRollback", "api-version", "attestation_type"} <= names
        assert "422" not in put["responses"]
        # the document is served at the provider prefix too, and is the same document
        r = c.get("/providers/iso/openapi.json")
        assert r.status_code == 200 and r.json() == doc
        # publishing it did not take the fast path's place: the route still answers MAA
        r = c.post(f"/attest/AzureGuest{Q}", content=b"{}")
        assert r.status_code == 400 and r.headers["x-ms-error-code"] == "InvalidParameter"


def test_schemathesis_finds_no_server_error(svc: Any) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    with svc.client() as c:
        doc = c.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    calls: list[int] = []

    def check(case: Any) -> None:
        calls.append(1)
        response = case.call(base_url=svc.url, verify=svc.ca, timeout=30)
        where = f"{case.method} {case.formatted_path}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.text[:200]}")
        elif response.status_code >= 400:
            body = response.json()
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            header = response.headers.get("x-ms-error-code")  # schemathesis: a list
            header = header[0] if isinstance(header, list) and header else header
            if not code or header != code:
                failures.append(
                    f"{where}: {response.status_code} without an MAA body: "
                    f"{response.headers} {response.text[:200]}"
                )

    operations = run_every_operation(schema, check, max_examples=MAX_EXAMPLES)
    assert operations >= 20
    assert len(calls) >= operations * 2, len(calls)
    assert failures == [], failures[:10]
