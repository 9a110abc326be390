"""Fixtures of the scale tests: one real AzureGuest request from a swtpm lab VM booted
from the Azure Trusted Launch log, shared by the fault and replica tests (the protocol
has no server nonce, so replaying it is what load looks like)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

AZURE_LOG = "maa/azure-guest-vm-derived/azure-trusted-launch-ws2019.tcglog.bin"
WINDOWS_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14)


@pytest.fixture(scope="module")
def request_body(lab: Any, corpus: Path) -> tuple[bytes, Path]:
    """(request body, the lab's CA that issued its AIK certificate)."""
    from bootwatch.agent.evidence import OsInfo, collect_evidence

    name = f"scale-{uuid.uuid4().hex[:6]}"
    lab.create_vm(name, corpus / AZURE_LOG)
    with lab.running(name) as vm:
        ev = collect_evidence(
            vm.tcti, tcg_log=(corpus / AZURE_LOG).read_bytes(),
            os_info=OsInfo("Windows", "Microsoft", 10, 0, "NotApplicable"),
            client_payload={"nonce": "scale"}, pcr_indices=WINDOWS_PCRS)
    return ev.request_body(), lab.ca_cert_path
