"""The service trusts the built-in azure-trusted-launch anchors unless told not to."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from bootwatch.attest.evidence import verify_evidence
from bootwatch.protocol.azureguest import decode_request
from bootwatch.service.attestation import load_attestation_config

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
AZURE = SHARED / "corpus/maa/azure-guest-vm-derived"
Q = "?api-version=2020-10-01"


def _body() -> bytes:
    inner = (AZURE / "attestation-info.json").read_bytes()
    return json.dumps({"AttestationInfo": base64.urlsafe_b64encode(inner).rstrip(b"=").decode()
                       }).encode()


def test_the_service_anchors_include_the_builtin_set_unless_turned_off(
        service_factory: Any) -> None:
    request = decode_request((AZURE / "attestation-info.json").read_bytes())
    in_validity = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    on = service_factory()
    cfg = load_attestation_config(on.settings)
    v = verify_evidence(request, trust_anchors=cfg.trust_anchors, at=in_validity)
    assert v.passed and v.verified_aik_chain is not None
    assert "Azure Virtual TPM Root Certificate Authority 2023" in v.verified_aik_chain.subjects[-1]
    # over HTTP today: the chain is found, and the leaf (expired 2025-10-30) is what fails
    with on.client() as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=_body(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "aik_cert_expired" in r.json()["error"]["message"]

    off = service_factory(no_builtin_anchors=True)
    cfg = load_attestation_config(off.settings)
    assert cfg.trust_anchors.certificates == ()
    v = verify_evidence(request, trust_anchors=cfg.trust_anchors, at=in_validity)
    assert v.check("aik_certificate").reason_code == "no_trust_anchors"
