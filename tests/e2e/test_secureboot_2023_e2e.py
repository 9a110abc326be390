"""A Trusted Launch VM with Microsoft's 2023 Secure Boot certificates, end to end.

Microsoft's 2011 Secure Boot CAs expire from June 2026; Windows adds the 2023 ones to
KEK and db by itself, Azure creates Trusted Launch VMs with them since April 2024
(KB5085395, KB5103014), and the updated Windows Boot Manager is signed by the Windows
UEFI CA 2023.  Before the template knew them, the default policy denied every such VM
(default-securebootkeysvalidated and dbvalidated false).

The log: the real Azure Trusted Launch WS2019 log (shared corpus) with the real 2023
certificates (tests/data/secureboot-2023, Microsoft's published DER files) appended to
its KEK and db measurements and its boot manager's authority record naming the Windows
UEFI CA 2023, every digest recomputed (bootwatch.lab.drift).  A swtpm lab VM boots it
and the real agent code attests it to the service with the default policy.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from bootwatch.agent.attestation import attest_once
from bootwatch.attest.claims import MS_WINDOWS_PCA_2011, MS_WINDOWS_UEFI_CA_2023
from bootwatch.eventlog.framing import parse_log
from bootwatch.eventlog.state import boot_state_to_json, extract_boot_state
from bootwatch.lab.drift import append_to_variable, replace_authority, x509_signature_list
from bootwatch.protocol import token as t

pytestmark = [pytest.mark.swtpm]

DATA = Path(__file__).resolve().parents[1] / "data" / "secureboot-2023"
#: Microsoft's signature owner GUID (the owner of every Microsoft entry in KEK and db)
MICROSOFT = uuid.UUID("77fa9abd-0359-4d32-bd60-28f4e78f784b")
AZURE_LOG = "maa/azure-guest-vm-derived/azure-trusted-launch-ws2019.tcglog.bin"


def updated_log(original: bytes) -> bytes:
    def der(name: str) -> bytes:
        return (DATA / f"{name}.der").read_bytes()

    log = append_to_variable(original, "KEK", x509_signature_list(
        MICROSOFT, der("microsoft-corporation-kek-2k-ca-2023")))
    log = append_to_variable(log, "db", b"".join(x509_signature_list(MICROSOFT, der(n)) for n in (
        "windows-uefi-ca-2023", "microsoft-uefi-ca-2023", "microsoft-option-rom-uefi-ca-2023")))
    return replace_authority(log, MICROSOFT, der("windows-uefi-ca-2023"))


def test_the_test_data_is_microsofts_certificates() -> None:
    assert hashlib.sha1((DATA / "windows-uefi-ca-2023.der").read_bytes()).hexdigest() \
        == MS_WINDOWS_UEFI_CA_2023


def test_a_vm_with_the_2023_certificates_is_permitted_by_the_default_policy(
        e2e: Any, tmp_path: Path) -> None:
    original = (e2e.corpus / AZURE_LOG).read_bytes()
    log = updated_log(original)
    state: Any = boot_state_to_json(extract_boot_state(parse_log(log)))
    assert [a["sha1_thumbprint"] for a in state["authorities"]] == [MS_WINDOWS_UEFI_CA_2023]
    db = [e["sha1_thumbprint"] for e in state["db"]]
    assert db[0] == MS_WINDOWS_PCA_2011 and len(db) == 4 and len(state["kek"]) == 2
    path = tmp_path / "ws2019-2023.bin"
    path.write_bytes(log)
    e2e.lab.create_vm("ws2019-2023", path)
    with e2e.lab.running("ws2019-2023") as running:
        out = attest_once(running.tcti, log, e2e.url, ca=e2e.ca)
    assert out.verdict.value == "permit", out.reason
    for claim in (t.DEFAULT_KEYS_VALIDATED, t.DB_VALIDATED, t.DBX_VALIDATED, t.SECUREBOOT,
                  t.DEBUGGERS_DISABLED, t.SIGNING_DISABLED):
        assert out.claims[claim] is True, claim
