"""Boot facts and claims from real logs and the real Azure Trusted Launch request."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bootwatch.attest.claims import (
    AZURE_TRUSTED_LAUNCH,
    dbx_reference_from_json,
    derive_azurevm_claims,
)
from bootwatch.attest.facts import (
    client_payload_claim,
    enc_key_jwk,
    measured_secure_boot,
    os_info_of,
    pcrs_json,
    policy_claims,
    vm_id_from_aik_certificate,
    windows_boot_config,
)
from bootwatch.eventlog import parse_log
from bootwatch.eventlog.decode import events_claim
from bootwatch.protocol import token as t
from bootwatch.protocol.azureguest import decode_request
from bootwatch.tpm.public import parse_tpm2b_public

sys.path.insert(0, str(Path(__file__).parent))
from attest_corpus import AZURE, EVENTLOGS, MAA, SECUREBOOT

SAMPLE = json.loads((MAA / "cvm-guest-attestation/sampleAttestationToken.json").read_text())


@pytest.fixture(scope="module")
def dbx_ref():  # type: ignore[no-untyped-def]
    data = (SECUREBOOT / "dbx_info_msft_latest.json").read_bytes()
    return dbx_reference_from_json(data, source="dbx_info_msft_latest.json")


def _log(rel: str):  # type: ignore[no-untyped-def]
    return parse_log((EVENTLOGS / rel).read_bytes())


def test_azure_request_claims_match_microsoft_sample(azure_request_body: bytes, dbx_ref) -> None:  # type: ignore[no-untyped-def]
    req = decode_request(azure_request_body)
    log = parse_log(req.tcg_logs)
    sb = measured_secure_boot(log)
    attested = req.tpm_info.pcr_set
    events = events_claim(log)
    win = windows_boot_config(log, attested)
    assert win.present and win.attested
    enc = parse_tpm2b_public(req.tpm_info.enc_key_pub).public_key()
    assert isinstance(enc, rsa.RSAPublicKey)
    out = derive_azurevm_claims(
        secure_boot=sb, windows=win, templates=(AZURE_TRUSTED_LAUNCH,), dbx_reference=dbx_ref,
        os_info=os_info_of(req), attested_pcrs=attested, protocol_version=req.protocol_version,
        enc_key_jwk=enc_key_jwk(enc), client_payload=client_payload_claim(req.client_payload),
    )
    # every boolean and OS claim Microsoft's sample token carries has the same value here
    for name in (t.SECUREBOOT, t.DB_VALIDATED, t.DBX_VALIDATED, t.DEFAULT_KEYS_VALIDATED,
                 t.DEBUGGERS_DISABLED, t.SIGNING_DISABLED, t.BOOTDEBUG_ENABLED,
                 t.KERNELDEBUG_ENABLED, t.HYPERVISORDEBUG_ENABLED, t.TESTSIGNING_ENABLED,
                 t.FLIGHTSIGNING_ENABLED, t.IS_WINDOWS, t.OSTYPE, t.OSDISTRO, t.OSBUILD,
                 t.OSVERSION_MAJOR, t.OSVERSION_MINOR, t.PROTOCOL_VER, t.HVCI_POLICY):
        assert out.claims[name] == SAMPLE[name], (name, out.decision(name))
    assert out.claims[t.ATTESTED_PCRS] == [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14]
    assert out.template == "azure-trusted-launch"
    jwk = out.claims[t.RUNTIME]["keys"][0]
    assert set(jwk) == set(SAMPLE[t.RUNTIME]["keys"][0])
    assert jwk["kid"] == "TpmEphemeralEncryptionKey" and jwk["e"] == "AQAB"
    arm = base64.b64decode(out.claims[t.RUNTIME]["client-payload"]["ArmID"]).decode()
    assert arm.startswith("/subscriptions/130068aa-")
    # the verifier's dbx is the VM's own: 485 hashes
    assert sb.dbx_hashes is not None and len(sb.dbx_hashes) == 485
    names = {c.type for c in policy_claims(out, events=events, pcrs=pcrs_json({}))}
    assert {"events", "pcrs", t.SECUREBOOT, t.DBX_VALIDATED} <= names
    assert t.RUNTIME not in names


def test_rhel8_boots_a_revoked_shim(dbx_ref) -> None:  # type: ignore[no-untyped-def]
    sb = measured_secure_boot(_log("go-tpm-tools/rhel8-uefi.bin"))
    assert sb.secure_boot is True
    from bootwatch.attest.claims import dbx_validated, match_template

    decision = dbx_validated(sb, dbx_ref)
    assert decision.value is False and "revoked by dbx_info_msft_latest.json" in decision.reason
    tpl, why = match_template(sb, (AZURE_TRUSTED_LAUNCH,))
    assert tpl is None and "PK [34291bbf7389]" in why


def test_secure_boot_off_and_no_dbx() -> None:
    off = measured_secure_boot(_log("go-tpm-tools/ubuntu-2104-no-secure-boot.bin"))
    assert off.secure_boot is False
    nodbx = measured_secure_boot(_log("go-tpm-tools/ubuntu-2104-no-dbx.bin"))
    assert nodbx.dbx_hashes == frozenset()


def test_linux_log_has_no_sipa() -> None:
    assert windows_boot_config(_log("go-tpm-tools/cos-101-amd-sev.bin"), range(8)).present is False


def test_sipa_unattested_when_pcr12_not_quoted() -> None:
    log = parse_log((AZURE / "azure-trusted-launch-ws2019.tcglog.bin").read_bytes())
    win = windows_boot_config(log, range(8))
    assert win.present and not win.attested


def test_vm_id_from_certificates() -> None:
    from cryptography import x509

    azure = x509.load_der_x509_certificate((AZURE / "aik-cert.der").read_bytes())
    assert vm_id_from_aik_certificate(azure) is None  # CN=3098098a126b.TrustedVM.Azure.Microsoft
    assert vm_id_from_aik_certificate(None) is None
