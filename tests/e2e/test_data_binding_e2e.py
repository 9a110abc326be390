"""A Secure-Boot-off VM that rewrites the *data* of its SecureBoot variable event (leaving
the measured digests alone) is refused: the PCRs vouch for digests, and the verifier binds
every event it reads to its digest before trusting it (review finding, 2026-11-24)."""

from __future__ import annotations

import dataclasses
import ssl
from typing import Any

import httpx
import pytest

from bootwatch.agent.evidence import OsInfo, collect_from
from bootwatch.agent.tpm import open_tpm
from bootwatch.protocol.azureguest import encode_request

pytestmark = pytest.mark.swtpm
SECURE_BOOT_NAME = "SecureBoot".encode("utf-16-le")


def _flip_secureboot_to_on(log: bytes) -> bytes:
    at = log.rfind(SECURE_BOOT_NAME)
    assert at > 0, "the log measures the SecureBoot variable"
    data = at + len(SECURE_BOOT_NAME)
    assert log[data] == 0, "this VM booted with Secure Boot off"
    return log[:data] + b"\x01" + log[data + 1:]


def test_rewritten_secureboot_data_is_refused(e2e: Any, vms: Any) -> None:
    log = vms["sboff"].log_path.read_bytes()
    with e2e.lab.running("sboff") as vm, open_tpm(vm.tcti) as esys:
        ev = collect_from(esys, tcg_log=log, os_info=OsInfo("Linux", "Ubuntu", 21, 4))
    forged = dataclasses.replace(ev.request(), tcg_logs=_flip_secureboot_to_on(log))
    ctx = ssl.create_default_context(cafile=str(e2e.ca))
    with httpx.Client(base_url=e2e.url, verify=ctx, timeout=30) as c:
        honest = c.post("/attest/AzureGuest?api-version=2020-10-01", content=ev.request_body())
        r = c.post("/attest/AzureGuest?api-version=2020-10-01", content=encode_request(forged))
    # the honest request is denied by policy (Secure Boot off) ...
    assert honest.status_code == 400
    assert honest.json()["error"]["code"] == "PolicyEvaluationError"
    # ... and the rewritten one never reaches the policy: its evidence is rejected
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "InvalidParameter"
    assert "log_replay" in err["message"]
    assert "log_data_digest_mismatch" in err["message"]
    assert "PCR 7" in err["message"]
