"""Issue 15 item 6: schemathesis against the monitor's OpenAPI document.

The document is the one ``bootwatch monitor run`` serves at ``/api/v1/openapi.json``
(``create_monitor_app``); the API is driven over real HTTPS on loopback, on the embedded
server (whose ``/api/v1`` is the same router over the same container) with one lab VM
enrolled and attested, so reads find rows and writes find something to change. Every
request carries the admin bearer token, so the authenticated routes are reached. The
checks: no 5xx, and responses conform to the document (status code documented, content
type, body schema, documented headers).
"""

from __future__ import annotations

from typing import Any

import pytest
from bwdeploy import ADMIN, EVENTLOGS, Deployment, DeploymentFactory
from schemathesis_run import run_every_operation

from bootwatch.lab import Lab
from bootwatch.monitor.app import create_monitor_app

#: examples per operation: enough to reach each parameter and body shape a few times while
#: the whole run stays well under a minute (one server per database backend)
MAX_EXAMPLES = 20
COS93 = EVENTLOGS / "go-tpm-tools" / "cos-93-amd-sev.bin"


@pytest.fixture(scope="module")
def dep(deploy: DeploymentFactory, lab: Lab, db: tuple[str, str]) -> Deployment:
    d = deploy()
    vm = lab.create_vm(f"{'pg' if db[1] else 'sq'}-openapi", COS93)
    with d.client() as c:
        r = c.post(f"/api/v1/vms/{vm.vm_id}/enable", json={"name": "openapi", "group": "g"})
        assert r.status_code == 200, r.text
    assert d.attest(vm.name).verdict == "permit"
    return d


def test_real_answers_conform_to_the_document(dep: Deployment) -> None:
    """Random ids mostly meet 404s; these requests name the rows that exist, so every
    200 schema of the reads (and of enable) is checked against a real answer."""
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis import checks as sc

    schema = schemathesis.openapi.from_dict(_document(dep))
    with dep.client() as c:
        vm = c.get("/api/v1/vms").json()["items"][0]
        alerts = c.get("/api/v1/alerts").json()["items"]
    cases = [
        ("/api/v1/summary", "GET", {}, {}),
        ("/api/v1/vms", "GET", {}, {"limit": 1}),
        ("/api/v1/vms/{ref}", "GET", {"ref": vm["vm_id"]}, {}),
        ("/api/v1/vms/{ref}", "GET", {"ref": vm["name"]}, {}),
        ("/api/v1/boots/{boot_id}", "GET", {"boot_id": vm["last_boot"]}, {}),
        ("/api/v1/alerts", "GET", {}, {"status": "all"}),
        ("/api/v1/recommendations", "GET", {}, {"vm": vm["vm_id"]}),
        ("/api/v1/recommendations/groups", "GET", {}, {}),
        ("/api/v1/agents", "GET", {}, {}),
        ("/api/v1/baselines", "GET", {}, {"vm": vm["vm_id"]}),
        ("/api/v1/suppressions", "GET", {}, {}),
        ("/api/v1/vms/{ref}/diff", "GET", {"ref": vm["vm_id"]}, {}),
    ]
    cases += [("/api/v1/alerts/{alert_id}", "GET", {"alert_id": a["id"]}, {}) for a in alerts[:2]]
    checks = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
              sc.response_schema_conformance, sc.response_headers_conformance]
    statuses = []
    for path, method, path_parameters, query in cases:
        case = schema[path][method].Case(path_parameters=path_parameters, query=query)
        response = case.call_and_validate(base_url=dep.url, verify=dep.ca, timeout=30,
                                          headers={"Authorization": f"Bearer {ADMIN}"},
                                          checks=checks)
        statuses.append((path, response.status_code))
    assert all(code == 200 for where, code in statuses if "diff" not in where), statuses
    assert vm["last_boot"] is not None and vm["monitored"] is True


def _document(dep: Deployment) -> dict[str, Any]:
    return create_monitor_app(dep.container).openapi()


def test_monitor_document_describes_errors_and_bodies(dep: Deployment) -> None:
    doc = _document(dep)
    paths = doc["paths"]
    assert "/api/v1/vms/{ref}" in paths and "/api/v1/outcomes" in paths
    for path, methods in paths.items():
        for method, op in methods.items():
            responses = op["responses"]
            assert "422" not in responses, (path, method)
            if path.startswith("/api/v1/"):
                assert {"400", "401"} <= set(responses), (path, method, sorted(responses))
    assert "requestBody" in paths["/api/v1/vms/{ref}/enable"]["post"]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(dep: Deployment) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis import checks as sc

    schema = schemathesis.openapi.from_dict(_document(dep))
    failures: list[str] = []
    calls: list[int] = []
    chosen = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance,
              sc.response_schema_conformance, sc.response_headers_conformance]

    def check(case: Any) -> None:
        calls.append(1)
        headers = {"Authorization": f"Bearer {ADMIN}"}
        try:
            case.call_and_validate(base_url=dep.url, verify=dep.ca, timeout=30,
                                   headers=headers, checks=chosen)
        except (Exception, BaseExceptionGroup) as exc:  # one group of failures per case
            subs = getattr(exc, "exceptions", None) or [exc]
            what = "; ".join(f"{type(e).__name__}: {str(e).splitlines()[0]}" for e in subs)
            failures.append(f"{case.method} {case.formatted_path}: {what} "
                            f"[{str(exc)[:400]}]")

    operations = run_every_operation(schema, check, max_examples=MAX_EXAMPLES)
    assert operations >= 20
    assert len(calls) >= operations * 2, len(calls)
    assert failures == [], "\n".join(failures[:40])


def test_what_schemathesis_found_is_a_400_naming_the_input(dep: Deployment) -> None:
    """Found by the run above on PostgreSQL (and SQLite for the integers): ids past the
    database's 32-bit integers and text with NUL went to the database and came back as
    503 ``monitor database error: DataError``; they are bad input, refused up front."""
    too_big = 2**31
    with dep.client() as c:
        for method, path in [("GET", f"/api/v1/boots/{too_big}"),
                             ("GET", "/api/v1/boots/51309015043254948456770306048"),
                             ("DELETE", f"/api/v1/baselines/{too_big}"),
                             ("DELETE", f"/api/v1/suppressions/{too_big}"),
                             ("GET", f"/api/v1/vms/x/diff?boot={too_big}"),
                             ("GET", "/api/v1/baselines?vm=%00x"),
                             ("GET", "/api/v1/vms?group=a%00b"),
                             ("GET", "/api/v1/alerts?vm=%00"),
                             ("GET", "/api/v1/vms/a%00b"),
                             ("POST", "/api/v1/alerts/a%00b/ack")]:
            r = c.request(method, path)
            assert r.status_code == 400, (method, path, r.status_code, r.text)
            assert r.json()["error"]["code"] == "InvalidParameter", r.text
            assert r.headers["x-ms-error-code"] == "InvalidParameter"
        r = c.post("/api/v1/vms/NO-SUCH-VM/enable", json={"name": "a\x00b"})
        assert r.status_code == 400 and "NUL" in r.json()["error"]["message"], r.text
        # the largest id is still a plain lookup
        assert c.get("/api/v1/boots/2147483647").status_code == 404
        # a dry run's look-back past datetime's range was a 500 (OverflowError)
        policy = "version=1.2; authorizationrules { => permit(); };"
        for since in (10**12, 2**63):
            r = c.post("/api/v1/dry-run", json={"policy": policy, "since_seconds": since})
            assert r.status_code == 400 and "since_seconds" in r.text, r.text
        r = c.post("/api/v1/dry-run", json={"policy": policy, "since_seconds": 100 * 365 * 86400})
        assert r.status_code == 200, r.text


def _outcome(**fields: Any) -> dict[str, Any]:
    base = {"schema": 1, "verdict": "deny", "time": "2026-01-01T00:00:00Z",
            "event_id": f"openapi-{abs(hash(repr(sorted(fields.items())))):x}",
            "provider": "p", "attestation_type": "AzureGuest", "reason": "r",
            "policy_hash": "h", "vm_id": "OPENAPI-VM"}
    return {**base, **fields}


def _report(**fields: Any) -> dict[str, Any]:
    base = {"ReportId": f"r-{abs(hash(repr(sorted(fields.items())))):x}",
            "VmId": "OPENAPI-VM", "HealthStatus": "PlatformError",
            "Time": "2026-01-01T00:00:00Z", "AgentVersion": "1.0",
            "PlatformErrorMessage": "m"}
    return {**base, **fields}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/outcomes", _outcome(reset_count=2**40)),
        ("/api/v1/outcomes", _outcome(dbx_missing=2**31)),
        ("/api/v1/outcomes", _outcome(reason="a\x00b")),
        ("/api/v1/outcomes", _outcome(provider="\ud800")),
        ("/api/v1/outcomes", _outcome(vm_id="OPENAPI-VM\n")),
        ("/api/v1/reports", _report(BootCounter=2**40)),
        ("/api/v1/reports", _report(AgentVersion="1.0\x00")),
        ("/api/v1/reports", _report(PlatformErrorMessage="\udfff")),
        ("/api/v1/reports", _report(VmId="OPENAPI-VM\n")),
    ],
)
def test_ingestion_refuses_what_the_database_cannot_hold(dep: Deployment, path: str,
                                                          body: dict[str, Any]) -> None:
    """Outcome events and health reports whose integers are past the 32-bit columns, or
    whose text holds NUL or a lone surrogate, or an id with a trailing newline, are a 400
    naming the field (protocol/outcome.py, protocol/health.py), never a 5xx."""
    import json

    with dep.client() as c:
        r = c.post(path, content=json.dumps(body).encode(),
                   headers={"content-type": "application/json"})
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.json()["error"]["code"] == "InvalidParameter", r.text


def test_a_database_error_answers_503_without_its_sql(caplog: pytest.LogCaptureFixture) -> None:
    """The 503s above carried the database error whole (the SQL and its parameters, which
    hold request data) in the answer's message; the answer now names an incident and the
    log holds the details."""
    import json

    from bootwatch.errors import StorageError
    from bootwatch.monitor.api import _error_response

    exc = StorageError("monitor database error: DataError: integer out of range "
                       "[SQL: SELECT monitor_boots.id FROM monitor_boots WHERE id = 1]")
    with caplog.at_level("ERROR"):
        r = _error_response(exc)
    body = json.loads(bytes(r.body))
    assert r.status_code == 503 and body["error"]["code"] == "ServiceUnavailable"
    message = body["error"]["message"]
    assert "SQL" not in message and "monitor_boots" not in message
    incident = message.split("incident ")[1].split(")")[0]
    assert len(incident) == 32
    assert any(getattr(rec, "incident", None) == incident and "SELECT" in rec.reason
               for rec in caplog.records)
