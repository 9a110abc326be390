"""Issue 9: the attacks that got through, one test per item, over real HTTPS on loopback
(SQLite and PostgreSQL).  Item 6 is in tests/attest/test_evidence_forged.py and item 7
in tests/service/test_openapi.py."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bootwatch.policy import sign_policy
from bootwatch.service.models import AttestationRecordRow, PolicyRow, ProviderRow, SignerRow

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
AZURE = SHARED / "corpus/maa/azure-guest-vm-derived"
AUTH = {"Authorization": "Bearer test-admin-token-0123456789"}
Q = "?api-version=2020-10-01"
LAX = "version= 1.0;\nauthorizationrules\n{\n    => permit();\n};\nissuancerules\n{\n};\n"
STRICT = (
    "version= 1.0;\nauthorizationrules\n{\n"
    '    [type=="secureboot", value==false] => deny();\n    => permit();\n};\n'
    "issuancerules\n{\n};\n"
)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _iso_providers(signer_cert: Any) -> Any:
    def setup(state: Any) -> None:
        from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

        with state.db.session() as s:
            for name in ("iso9", "iso9b"):
                if s.get(ProviderRow, name) is None:
                    create_provider(
                        s, state.sealer, name, kind=ProviderKind.CUSTOM,
                        trust_model=TrustModel.ISOLATED, signers=[signer_cert],
                    )

    return setup


@pytest.fixture(scope="module")
def hsvc(service_factory: Any, signer1: Any) -> Any:
    return service_factory(_iso_providers(signer1[1]), allowed_hosts=("attest.example:8443",))


def _error(r: Any) -> dict[str, str]:
    assert r.headers["x-ms-error-code"] == r.json()["error"]["code"], r.text
    return r.json()["error"]  # type: ignore[no-any-return]


# --- item 1: authorised and rollback-proof policy and signer writes ----------------------


def test_isolated_policy_writes_need_a_principal_and_refuse_replays(
    hsvc: Any, h: Any, signer1: Any
) -> None:
    base = "/providers/iso9/policies"
    lax, strict = sign_policy(LAX, *signer1), sign_policy(STRICT, *signer1)
    with hsvc.client() as c:
        # a validly signed document alone no longer authorises a write
        r = c.put(f"{base}/AzureGuest{Q}", content=lax)
        assert r.status_code == 401 and "bearer token" in _error(r)["message"]
        assert c.put(f"{base}/AzureGuest{Q}", content=lax, headers=AUTH).status_code == 200
        assert c.put(f"{base}/AzureGuest{Q}", content=strict, headers=AUTH).status_code == 200
        # the attacker's move: GET the old policy JWS ... and PUT it back
        public = h.unverified_claims(c.get(f"{base}/AzureGuest{Q}").json()["token"])
        assert public["x-ms-policy"] == strict
        r = c.put(f"{base}/AzureGuest{Q}", content=lax)
        assert r.status_code == 401
        r = c.put(f"{base}/AzureGuest{Q}", content=lax, headers=AUTH)
        assert r.status_code == 409, r.text
        err = _error(r)
        assert err["code"] == "RollbackRefused"
        assert "superseded" in err["message"] and "allowRollback=true" in err["message"]
        # the same signed document for another attestation type
        r = c.put(f"{base}/Tpm{Q}", content=strict, headers=AUTH)
        assert r.status_code == 409 and "bound to its type" in _error(r)["message"]
        # a document that names its type is bound to it, rollback or not
        typed = h.signed_jws(
            {"AttestationPolicy": _b64url(LAX.encode()), "x-ms-attestation-type": "AzureGuest"},
            *signer1,
        )
        r = c.put(f"{base}/SgxEnclave{Q}&allowRollback=true", content=typed, headers=AUTH)
        assert r.status_code == 400 and "bound to attestation type" in _error(r)["message"]
        # iat older than the current policy's
        newer = h.signed_jws({"AttestationPolicy": _b64url(STRICT.encode()), "iat": 2000},
                             *signer1)
        newest = h.signed_jws({"AttestationPolicy": _b64url(STRICT.encode()), "iat": 3000},
                              *signer1)
        older = h.signed_jws({"AttestationPolicy": _b64url(LAX.encode()), "iat": 1000}, *signer1)
        assert c.put(f"{base}/Tpm{Q}", content=newer, headers=AUTH).status_code == 200
        r = c.put(f"{base}/Tpm{Q}", content=older, headers=AUTH)
        assert r.status_code == 409 and "older than the current" in _error(r)["message"]
        # the explicit, documented way back
        r = c.put(f"{base}/AzureGuest{Q}&allowRollback=true", content=lax, headers=AUTH)
        assert r.status_code == 200, r.text
        assert h.unverified_claims(c.get(f"{base}/AzureGuest{Q}").json()["token"])[
            "x-ms-policy"] == lax
        # resets: replaying an earlier signed reset after a newer policy is a rollback too
        reset = h.signed_jws(None, *signer1)
        assert c.post(f"{base}/AzureGuest:reset{Q}", content=reset, headers=AUTH).status_code \
            == 200
        assert c.put(f"{base}/AzureGuest{Q}", content=newest, headers=AUTH).status_code == 200
        r = c.post(f"{base}/AzureGuest:reset{Q}", content=reset, headers=AUTH)
        assert r.status_code == 409 and _error(r)["code"] == "RollbackRefused"
        r = c.post(f"{base}/AzureGuest:reset{Q}", content=reset)
        assert r.status_code == 401
    with hsvc.state.db.session() as s:
        rows = list(s.scalars(select(PolicyRow).where(PolicyRow.provider == "iso9")
                              .order_by(PolicyRow.id)))
    # the history names the authorised principal, never the signer, and marks the rollback
    assert rows and {r.changed_by for r in rows} == {"admin"}
    assert [r.rollback for r in rows if r.attestation_type == "AzureGuest"] == [
        False, False, True, False, False]


def test_signer_changes_need_a_principal_and_refuse_replays(
    hsvc: Any, h: Any, signer1: Any, signer2: Any
) -> None:
    jwk = {"kty": "RSA", "x5c": [h.x5c(signer2[1])]}
    body = json.dumps(h.signed_jws({"policyCertificate": jwk}, *signer1))
    url = "/providers/iso9b/certificates"
    with hsvc.client() as c:
        r = c.post(f"{url}:add{Q}", content=body)
        assert r.status_code == 401
        assert c.post(f"{url}:add{Q}", content=body, headers=AUTH).status_code == 200
        # the Azure SDK removes with the very same bytes it added with: allowed
        assert c.post(f"{url}:remove{Q}", content=body, headers=AUTH).status_code == 200
        # replaying the add brings back a removed signer: refused unless asked for
        r = c.post(f"{url}:add{Q}", content=body, headers=AUTH)
        assert r.status_code == 409 and _error(r)["code"] == "RollbackRefused"
        r = c.post(f"{url}:add{Q}&allowRollback=true", content=body, headers=AUTH)
        assert r.status_code == 200, r.text
        r = c.post(f"{url}:remove{Q}", content=body, headers=AUTH)
        assert r.status_code == 409 and _error(r)["code"] == "RollbackRefused"
        r = c.post(f"{url}:remove{Q}", content=body, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
    with hsvc.state.db.session() as s:
        rows = list(s.scalars(select(SignerRow).where(SignerRow.provider == "iso9b")
                              .order_by(SignerRow.id)))
    added = [r for r in rows if r.added_by is not None]
    assert len(added) == 2 and {r.added_by for r in added} == {"admin"}
    assert added[0].removed_by == "admin" and added[1].removed_at is None


# --- item 2: no anonymous disk filling ---------------------------------------------------


def _azure_body() -> bytes:
    inner = (AZURE / "attestation-info.json").read_bytes()
    return json.dumps({"AttestationInfo": _b64url(inner)}).encode()


def test_evidence_kept_only_when_parsed_and_within_the_quota(service_factory: Any) -> None:
    body = _azure_body()
    quota = 2 * len(body) + len(body) // 2  # room for two real requests, not three
    svc = service_factory(None, evidence_quota_per_client_bytes=quota)
    garbage = b'{"AttestationInfo": "' + b"A" * 200_000 + b"!"
    with svc.client() as c:
        for _ in range(3):
            r = c.post(f"/attest/AzureGuest{Q}", content=garbage)
            assert r.status_code == 400, r.text
        for _ in range(5):
            r = c.post(f"/attest/AzureGuest{Q}", content=body)
            assert r.status_code == 400 and "aik_certificate" in r.text
        assert svc.state.records.flush()
        metrics = c.get("/metrics").text
    with svc.state.db.session() as s:
        rows = list(s.scalars(select(AttestationRecordRow)
                              .where(AttestationRecordRow.client == "127.0.0.1")
                              .order_by(AttestationRecordRow.id)))
    mine = rows[-8:]
    # unparseable bodies are recorded (verdict, reason) without their bytes
    assert all(r.evidence is None and r.evidence_bytes is None for r in mine[:3])
    assert all("request" in r.reason for r in mine[:3])
    # parsed evidence is kept newest first within the per-client quota
    kept = [r for r in rows if r.evidence is not None]
    assert sum(r.evidence_bytes or 0 for r in kept) <= quota
    assert [r.id for r in kept] == [r.id for r in mine[-2:]]
    assert all(r.evidence == body and r.evidence_bytes == len(body) for r in kept)
    line = next(x for x in metrics.splitlines()
                if x.startswith('bootwatch_evidence_dropped_total{reason="client_quota"}'))
    assert float(line.split()[-1]) >= 3


def test_total_evidence_quota_drops_the_oldest(tmp_path: Path) -> None:
    from bootwatch.service.metrics import Metrics
    from bootwatch.service.records import (
        AttestationRecord,
        Verdict,
        enforce_evidence_quota,
        store_record,
    )
    from bootwatch.service.settings import Settings
    from bootwatch.service.state import bootstrap

    settings = Settings(data_dir=tmp_path, at_rest_key="11" * 32,
                        evidence_quota_per_client_bytes=3000, evidence_quota_total_bytes=5000)
    state = bootstrap(settings)
    try:
        ids = [store_record(state.db, state.settings,
                            AttestationRecord("shared", "AzureGuest", Verdict.EVIDENCE_REJECTED,
                                              evidence=bytes(1000), client=f"10.0.0.{i}"))
               for i in range(8)]
        metrics = Metrics.create()
        assert enforce_evidence_quota(state.db, state.settings, ["10.0.0.1"],
                                      metrics=metrics) == (0, 3)
        with state.db.session() as s:
            kept = [r.id for r in s.scalars(select(AttestationRecordRow)
                                            .where(AttestationRecordRow.evidence.is_not(None)))]
        assert sorted(kept) == ids[3:]
        assert metrics.evidence_dropped.labels("total_quota")._value.get() == 3
        # a quota of 0 keeps nothing at all
        row = store_record(state.db, Settings(data_dir=tmp_path, evidence_quota_total_bytes=0),
                           AttestationRecord("shared", "AzureGuest", Verdict.EVIDENCE_REJECTED,
                                                   evidence=b"x", client="10.0.0.9"))
        with state.db.session() as s:
            assert s.get(AttestationRecordRow, row).evidence is None  # type: ignore[union-attr]
    finally:
        state.close()


# --- item 3: a depth limit on every JSON reader of untrusted input ------------------------


def _nested_b64(depth: int) -> str:
    return _b64url(b'{"alg":"RS256","x":' + b"[" * depth + b"]" * depth + b"}")


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deeply_nested_json_is_400_naming_the_limit(hsvc: Any, h: Any, depth: int) -> None:
    deep = "[" * depth + "]" * depth
    tpm_inner = _b64url(b'{"payload": ' + deep.encode() + b"}")
    nested_header_jws = f"{_nested_b64(depth)}.e30.c2ln"
    nested_payload_jws = f"eyJhbGciOiJSUzI1NiJ9.{_b64url(deep.encode())}.c2ln"
    cases = [
        ("post", "/attest/Tpm", deep),
        ("post", "/attest/Tpm", json.dumps({"data": tpm_inner})),
        ("post", "/providers/iso9/certificates:add", json.dumps(nested_header_jws)),
        ("post", "/providers/iso9/certificates:add", nested_payload_jws),
        ("post", "/providers/iso9/certificates:add", '{"a":' + deep + "}"),
        ("post", "/providers/iso9/policies/AzureGuest:reset", nested_payload_jws),
        ("post", "/providers/iso9/policies/AzureGuest:reset", nested_header_jws),
        ("put", "/providers/iso9/policies/AzureGuest", nested_header_jws),
        ("put", "/providers/iso9/policies/AzureGuest", nested_payload_jws),
        ("post", "/attest/AzureGuest", deep),
        ("post", "/attest/AzureGuest", '{"AttestationInfo": "e30", "x": ' + deep + "}"),
    ]
    if depth > 1000:  # the issue's own body: 100,000 '[' (too deep long before it is invalid)
        cases += [("post", "/attest/Tpm", "[" * depth), ("post", "/attest/AzureGuest", "[" * depth)]
    with hsvc.client() as c:
        for method, path, body in cases:
            r = c.request(method, f"{path}{Q}", content=body, headers=AUTH)
            assert r.status_code == 400, (path, body[:60], r.text[:300])
            assert "limit of 64 levels" in _error(r)["message"], (path, r.text[:300])


def test_nested_bearer_token_header_names_the_limit(service_factory: Any) -> None:
    """With an OpenID issuer configured the bearer token's header is parsed (before any
    key is fetched): a nested one is refused as bad credentials, naming the limit."""
    svc = service_factory(None, oidc_issuer="https://127.0.0.1:9")
    with svc.client() as c:
        for depth in (65, 5000):
            token = f"{_nested_b64(depth)}.e30.c2ln"
            r = c.put(f"/providers/iso9/policies/AzureGuest{Q}", content="x",
                      headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, r.text
            assert "limit of 64 levels" in _error(r)["message"]


def test_client_payload_nesting_is_bounded_on_the_fast_path(hsvc: Any) -> None:
    from bootwatch.protocol.azureguest import decode_request, encode_request

    real = decode_request((AZURE / "attestation-info.json").read_bytes())
    inner = json.loads(base64.urlsafe_b64decode(
        json.loads(encode_request(real))["AttestationInfo"] + "=="))
    inner["ClientPayload"] = {"nonce": json.loads("[" * 900 + "]" * 900)}
    body = json.dumps({"AttestationInfo": _b64url(json.dumps(inner).encode())})
    with hsvc.client() as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=body)
    assert r.status_code == 400, r.text
    assert "ClientPayload.nonce" in r.text and "limit of 64 levels" in r.text


# --- item 4: the client never chooses the issuer's port ----------------------------------


def test_host_header_port_must_be_the_listening_or_a_configured_one(hsvc: Any) -> None:
    port = int(hsvc.url.rsplit(":", 1)[1])
    with hsvc.client() as c:
        def meta(host: str) -> Any:
            return c.get(f"/.well-known/openid-configuration{Q}", headers={"Host": host})

        r = meta("localhost:31337")
        assert r.status_code == 400 and "localhost:31337" in _error(r)["message"]
        r = meta("attest.example:9999")
        assert r.status_code == 400
        r = meta("localhost")  # no port = 443, which is not where this service listens
        assert r.status_code == 400
        assert meta(f"localhost:{port}").json()["issuer"] == f"https://localhost:{port}"
        ok = meta("attest.example:8443").json()  # a configured host:port pair
        assert ok["issuer"] == "https://attest.example:8443"
        assert ok["jwks_uri"] == "https://attest.example:8443/certs"
        # the token's jku follows the same rule: a forged port never signs a token
        r = c.post(f"/attest/AzureGuest{Q}", content=_azure_body(),
                   headers={"Host": "127.0.0.1:31337"})
        assert r.status_code == 400 and "not served here" in _error(r)["message"]


# --- item 5: every answer is an MAA body, HTTP parser errors included ---------------------


def _raw_exchange(svc: Any, request: bytes) -> bytes:
    port = int(svc.url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=svc.ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(request)
        chunks = []
        while True:
            try:
                data = tls.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def _responses(stream: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    while stream.startswith(b"HTTP/1.1 "):
        head, _, rest = stream.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        size = int(headers["content-length"])
        out.append((int(lines[0].split()[1]), headers, rest[:size]))
        stream = rest[size:]
    assert stream == b"", stream[:200]
    return out


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /attest/AzureGuest HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n{}",
        b"POST /attest/AzureGuest HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n"
        b'{}{"AttestationInfo": "e30"}',
        b"POST /attest/AzureGuest HTTP/1.1\r\nHost: {host}\r\nContent-Length: x1\r\n\r\n{}",
        b"GET / HTTP/1.1\r\nHost: {host}\r\nBad Header\r\n\r\n",
    ],
    ids=["negative", "smaller-than-body", "not-a-number", "bad-header"],
)
def test_malformed_http_is_answered_with_an_maa_body(hsvc: Any, request_bytes: bytes) -> None:
    host = hsvc.url.split("//")[1].encode()
    answers = _responses(_raw_exchange(hsvc, request_bytes.replace(b"{host}", host)))
    assert answers and answers[-1][0] == 400
    for status, headers, body in answers:
        assert status == 400, (status, body)
        assert headers["content-type"].startswith("application/json")
        error = json.loads(body)["error"]
        assert headers["x-ms-error-code"] == error["code"]
        assert error["message"]
    assert b"Invalid HTTP request received" not in answers[-1][2] or b"malformed HTTP" in \
        answers[-1][2]


def test_h11_fallback_protocol_answers_with_an_maa_body(hsvc: Any, h: Any) -> None:
    """Without httptools the service runs uvicorn's h11 protocol: same answer."""
    from types import SimpleNamespace

    from bootwatch.service.app import create_app
    from bootwatch.service.server import tls_files

    app = create_app(hsvc.settings, state=hsvc.state)
    tls = tls_files(hsvc.settings)
    with h.ThreadServer(app, tls=tls, http="bootwatch.service.httpproto:MaaH11Protocol") as srv:
        other = SimpleNamespace(url=f"https://127.0.0.1:{srv.port}", ca=hsvc.ca)
        request = (f"POST /attest/AzureGuest HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
                   "Content-Length: -1\r\n\r\n{}").encode()
        answers = _responses(_raw_exchange(other, request))
    assert [a[0] for a in answers] == [400]
    assert answers[0][1]["x-ms-error-code"] == "InvalidParameter"
    assert "malformed HTTP request" in json.loads(answers[0][2])["error"]["message"]


def test_the_default_per_client_quota_keeps_an_hourly_vms_whole_retention_window() -> None:
    """A defaults audit found the 16 MiB per-client default kept about 5 of the 7 days of
    evidence of one VM attesting at the agent's default interval: the retention promised
    was unreachable.  The real Trusted Launch request, once an hour for the retention
    window, with its jitter (cycles up to 10 % early), fits the default."""
    from bootwatch.agent.config import DEFAULT_INTERVAL, DEFAULT_JITTER
    from bootwatch.service.settings import Settings

    settings = Settings()
    requests = settings.evidence_retention_seconds / (DEFAULT_INTERVAL * (1 - DEFAULT_JITTER))
    assert requests * len(_azure_body()) <= settings.evidence_quota_per_client_bytes
