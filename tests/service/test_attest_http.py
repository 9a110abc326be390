"""/attest/AzureGuest and /attest/Tpm through real HTTPS on loopback (real Azure request)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bootwatch.policy import unsigned_policy_jws
from bootwatch.protocol.envelope import decode_token_response

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
AZURE = SHARED / "corpus/maa/azure-guest-vm-derived"
AUTH = {"Authorization": "Bearer test-admin-token-0123456789"}
Q = "?api-version=2020-10-01"
#: the Azure AIK certificate (issued by the built-in azure-trusted-launch CA-01) expired on
#: 2025-10-30, so a provider must waive the chain to permit the real request today
LENIENT = """version=1.1;
configurationrules { => issueproperty(type="require_valid_aik_cert", value=false); };
authorizationrules {
  [type=="secureboot", value==false] => deny();
  [type=="x-ms-azurevm-dbxvalidated", value==false] => deny();
  => permit();
};
issuancerules { c:[type=="x-ms-azurevm-is-windows"] => issue(type="windows", value=c.value); };
"""
DENY_WINDOWS = """version=1.1;
configurationrules { => issueproperty(type="require_valid_aik_cert", value=false); };
authorizationrules { [type=="x-ms-azurevm-is-windows", value==true] => deny(); => permit(); };
issuancerules { };
"""


def azure_body() -> bytes:
    inner = (AZURE / "attestation-info.json").read_bytes()
    token = base64.urlsafe_b64encode(inner).rstrip(b"=").decode()
    return json.dumps({"AttestationInfo": token}).encode()


def _set_policy(c: Any, text: str) -> None:
    r = c.put(f"/providers/aadp/policies/AzureGuest{Q}", content=unsigned_policy_jws(text),
              headers=AUTH)
    assert r.status_code == 200, r.text


def test_shared_provider_requires_a_valid_aik_chain(svc: Any) -> None:
    with svc.client() as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=azure_body(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "InvalidParameter"
    assert "aik_certificate" in err["message"]
    assert r.headers["x-ms-error-code"] == "InvalidParameter"


def test_permit_returns_sealed_envelope_and_records(svc: Any) -> None:
    from bootwatch.service.models import AttestationRecordRow

    with svc.client() as c:
        _set_policy(c, LENIENT)
        r = c.post(f"/providers/aadp/attest/AzureGuest{Q}", content=azure_body())
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"token"}
    env = decode_token_response(r.content)
    assert len(env.encrypted_inner_key) == 256 and len(env.iv) == 12
    assert svc.state.records.flush()  # records are written off the request path
    with svc.state.db.session() as s:
        rows = s.scalars(select(AttestationRecordRow).where(
            AttestationRecordRow.provider == "aadp")).all()
    assert any(row.verdict == "permit" for row in rows)
    # the answer names its record
    request_id = r.headers["x-bootwatch-request-id"]
    named = [row for row in rows if row.request_id == request_id]
    assert len(named) == 1 and named[0].verdict == "permit"


def test_the_container_owns_the_caches_requests_use(svc: Any) -> None:
    """A repeat attestation reuses the parse, replay and boot facts kept by this
    service's container (the pure layers keep none), and a policy change compiles
    through the provider store's compiler."""
    import hashlib

    from bootwatch.protocol.azureguest import decode_request

    caches = svc.state.verifier_caches
    digest = hashlib.sha256(decode_request(azure_body()).tcg_logs).digest()
    with svc.client() as c:
        _set_policy(c, LENIENT)
        for _ in range(2):
            r = c.post(f"/providers/aadp/attest/AzureGuest{Q}", content=azure_body())
            assert r.status_code == 200, r.text
    assert digest in caches.logs.ordered_keys()
    assert any(key[0] == digest for key in caches.boot_facts.ordered_keys())
    assert len(caches.aik_publics) >= 1 and len(caches.aik.certificates) >= 1
    store = svc.state.providers
    with svc.client() as c:
        _set_policy(c, DENY_WINDOWS)
        r = c.post(f"/providers/aadp/attest/AzureGuest{Q}", content=azure_body())
    assert r.status_code == 400 and r.json()["error"]["code"] == "PolicyEvaluationError"
    in_force = store.snapshot("aadp").policies["AzureGuest"].compiled
    assert in_force.text == DENY_WINDOWS
    assert store.compiler.compile(DENY_WINDOWS) is in_force  # kept by the store's compiler


def test_deny_names_the_rule(svc: Any) -> None:
    import logging

    from bootwatch.service.logs import get_logger

    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    log = get_logger()
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with svc.client() as c:
            _set_policy(c, DENY_WINDOWS)
            r = c.post(f"/providers/aadp/attest/AzureGuest{Q}", content=azure_body())
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "PolicyEvaluationError"
    assert 'type=="x-ms-azurevm-is-windows"' in err["message"]
    assert len(r.headers["x-bootwatch-request-id"]) == 36  # a denial is recorded and named
    # one log line per request; the attestation's carries its verdict and reason
    mine = [x for x in lines if x.getMessage() == "request" and x.__dict__.get("verdict")]
    assert len(mine) == 1, [x.__dict__ for x in lines]
    rec = mine[0].__dict__
    assert rec["verdict"] == "deny" and rec["status"] == 400 and rec["provider"] == "aadp"
    assert "x-ms-azurevm-is-windows" in rec["reason"]


def test_forged_pcr_value_names_the_check(svc: Any) -> None:
    inner = json.loads((AZURE / "attestation-info.json").read_bytes())
    inner["TpmInfo"]["PCRs"][7]["Digest"] = base64.b64encode(b"\x11" * 32).decode()
    token = base64.urlsafe_b64encode(json.dumps(inner).encode()).rstrip(b"=").decode()
    with svc.client() as c:
        _set_policy(c, LENIENT)
        r = c.post(f"/providers/aadp/attest/AzureGuest{Q}",
                   content=json.dumps({"AttestationInfo": token}))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "InvalidParameter"
    assert "pcr_digest" in r.json()["error"]["message"]


def test_malformed_bodies(svc: Any) -> None:
    with svc.client() as c:
        for body in (b"", b"[]", b'{"AttestationInfo": 5}', b"\xff\xfe"):
            r = c.post(f"/attest/AzureGuest{Q}", content=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["code"] == "InvalidParameter"
            assert r.json()["error"]["message"].startswith("request: ")


def test_tpm_round_one(svc: Any) -> None:
    msg = {"payload": {"type": "aikcert"}, "metadata": {"os_ver": "10.0.19041"}}
    data = base64.urlsafe_b64encode(json.dumps(msg).encode()).rstrip(b"=").decode()
    with svc.client() as c:
        r = c.post(f"/attest/Tpm{Q}", json={"data": data})
        assert r.status_code == 200, r.text
        raw = r.json()["data"]
        answer = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        payload = answer["payload"]
        challenge = base64.urlsafe_b64decode(payload["challenge"] + "==")
        assert len(challenge) == 16
        sc = payload["service_context"]
        ctx = json.loads(base64.urlsafe_b64decode(sc + "=" * (-len(sc) % 4)))
        assert set(ctx) == {"ProtectionKeyName", "ProtectedContext"}
        bad = base64.urlsafe_b64encode(b'{"payload":{"type":"other"}}').decode()
        r = c.post(f"/attest/Tpm{Q}", json={"data": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter"
        r = c.post(f"/attest/Tpm{Q}", json={"nodata": 1})
        assert r.status_code == 400


def test_custom_provider_can_require_authentication(svc: Any) -> None:
    from bootwatch.service.models import ProviderRow
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    with svc.state.db.session() as s:
        if s.get(ProviderRow, "authp") is None:
            create_provider(s, svc.state.sealer, "authp", kind=ProviderKind.CUSTOM,
                            trust_model=TrustModel.AAD, attest_auth_required=True)
    with svc.client() as c:
        r = c.post(f"/providers/authp/attest/AzureGuest{Q}", content=azure_body())
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "Unauthorized"
        # with a token the request reaches the pipeline (and fails on the AIK chain there)
        r = c.post(f"/providers/authp/attest/AzureGuest{Q}", content=azure_body(), headers=AUTH)
        assert r.status_code == 400 and "aik_certificate" in r.json()["error"]["message"]


def test_empty_api_version_is_invalid(svc: Any) -> None:
    with svc.client() as c:
        r = c.post("/attest/AzureGuest?api-version=", content=azure_body())
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter"
