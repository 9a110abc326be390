"""Edge cases of the attestation request path (fast path, /attest/Tpm, enrolment),
each through real HTTPS on loopback, each failing on the code before its fix."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import httpx

Q = "?api-version=2020-10-01"


def _guest_body(inner: dict[str, Any]) -> bytes:
    token = base64.urlsafe_b64encode(json.dumps(inner).encode()).rstrip(b"=").decode()
    return json.dumps({"AttestationInfo": token}).encode()


def test_an_unrecorded_attestation_503_carries_no_sql_or_evidence(
    svc: Any, backend: Any, h: Any
) -> None:
    """When the attestation record cannot be committed the service answers 503 (nothing
    decided), but the message carried the record writer's StorageError whole: the INSERT
    with its parameters, i.e. the evidence, client address and request ids of every
    record in the failed group commit (other callers' data too).  The answer names an
    incident; the SQL goes to the log only."""
    h.refuse_provider_inserts(svc.state, backend, "attestation_records", "recfail")
    marker = "evidence-marker-5c1e"
    body = _guest_body({"AttestationProtocolVersion": "2.0", "OSType": marker})
    with h.service_log() as records, svc.client() as c:
        r = c.post(f"/providers/recfail/attest/AzureGuest{Q}", content=body)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    err = r.json()["error"]
    assert err["code"] == "ServiceUnavailable"
    message = err["message"]
    assert "INSERT" not in message and "attestation_records" not in message, message
    assert marker not in message and "127.0.0.1" not in message, message
    assert "nothing was decided" in message
    found = re.search(r"incident ([0-9a-f]{16})", message)
    assert found, message
    incident = found.group(1)
    logged = [rec for rec in records if getattr(rec, "incident", None) == incident]
    assert len(logged) == 1
    assert "attestation_records" in str(getattr(logged[0], "reason", ""))


def test_a_trailing_slash_under_a_provider_prefix_stays_with_that_provider(svc: Any) -> None:
    """FastAPI answers ``/x/`` with a 307 to ``/x``, built from the path after the
    provider prefix was stripped: ``/providers/aadp/certs/`` was sent to ``/certs``, the
    default provider's keys (a relying party then trusts another provider's tokens), and
    ``/providers/ghost/...`` (no such provider) to the default provider instead of a 404;
    a policy write or an enrolment followed the same redirect to the default provider."""
    with svc.client(follow_redirects=True) as c:
        own = c.get(f"/providers/aadp/certs{Q}")
        assert own.status_code == 200, own.text
        default = c.get(f"/certs{Q}")
        assert own.json() != default.json()  # two providers, two key sets
        r = c.get(f"/providers/aadp/certs/{Q}")
        assert r.status_code == 200, r.text
        assert r.json() == own.json()
        assert r.url.path == "/providers/aadp/certs"
        assert r.url.params.get("api-version") == "2020-10-01"
        r = c.get(f"/providers/ghost/certs/{Q}")
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "NotFound"
    with svc.client() as c:
        r = c.post(f"/providers/aadp/attest/Tpm/{Q}", content=b"{}")
        assert r.status_code == 307, r.text
        assert httpx.URL(r.headers["location"]).path == "/providers/aadp/attest/Tpm"
