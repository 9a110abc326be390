"""End to end over HTTPS on loopback with real swtpm VMs: permit, deny, forged evidence,
sealed token opened in the vTPM, token verified with PyJWT via OpenID discovery + /certs."""

from __future__ import annotations

import base64
import json
import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from bootwatch.agent.evidence import OsInfo, collect_from, default_pcr_selection
from bootwatch.agent.tpm import open_tpm
from bootwatch.agent.unseal import open_envelope
from bootwatch.cli.agent_attest import attest_once
from bootwatch.protocol.envelope import decode_token_response

pytestmark = pytest.mark.swtpm
Q = "?api-version=2020-10-01"
SHARED_LOGS = (
    Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    / "corpus" / "eventlogs"
)


def _client(e2e: Any) -> httpx.Client:
    return httpx.Client(base_url=e2e.url, verify=ssl.create_default_context(cafile=str(e2e.ca)),
                        timeout=30)


def _verify_with_pyjwt(e2e: Any, token: str) -> dict[str, Any]:
    """What a relying party does: OpenID discovery, then /certs, then PyJWT."""
    with _client(e2e) as c:
        meta = c.get("/.well-known/openid-configuration").json()
        jwks = c.get(meta["jwks_uri"]).json()
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    key = jwt.PyJWK(jwk, algorithm="RS256").key
    return jwt.decode(token, key, algorithms=["RS256"], issuer=meta["issuer"])


def test_permit_unseal_in_vtpm_and_verify(e2e: Any, vms: Any) -> None:
    log = vms["cos"].log_path.read_bytes()
    with e2e.lab.running("cos") as vm, open_tpm(vm.tcti) as esys:
        ev = collect_from(esys, tcg_log=log, os_info=OsInfo("Linux", "COS", 101, 0),
                          client_payload={"nonce": "e2e-123"})
        with _client(e2e) as c:
            r = c.post(f"/attest/AzureGuest{Q}", content=ev.request_body())
        assert r.status_code == 200, r.text
        envelope = decode_token_response(r.content)
        token = open_envelope(esys, envelope, quoted_pcrs=ev.pcrs, pcr_indices=ev.pcr_set)
    claims = _verify_with_pyjwt(e2e, token)
    assert claims["iss"] == e2e.url
    assert claims["x-ms-attestation-type"] == "azurevm"
    assert claims["secureboot"] is True
    assert claims["x-ms-azurevm-default-securebootkeysvalidated"] is True
    # the agent's default: 0-7 and the late-boot PCRs the log extends (GRUB, kernel: 8, 9)
    assert claims["x-ms-azurevm-attested-pcrs"] == list(default_pcr_selection(log))
    assert {8, 9} <= set(claims["x-ms-azurevm-attested-pcrs"])
    assert claims["x-ms-runtime"]["client-payload"] == {
        "nonce": base64.b64encode(b"e2e-123").decode()}
    jwk = claims["x-ms-runtime"]["keys"][0]
    assert jwk["kid"] == "TpmEphemeralEncryptionKey" and jwk["key_ops"] == ["encrypt"]
    assert claims["exp"] - claims["iat"] == 8 * 3600
    # the lab CA names the VM id in the AIK certificate's CN, as Azure's VM id GUID
    assert claims["x-ms-azurevm-vmid"] == vms["cos"].vm_id.upper()


def test_agent_flow_deny_with_rule(e2e: Any, vms: Any) -> None:
    with e2e.lab.running("sboff") as vm:
        result = attest_once(vm.tcti, vms["sboff"].log_path.read_bytes(), e2e.url, ca=e2e.ca)
    assert result.verdict == "deny" and result.exit_code == 1
    assert result.error_code == "PolicyEvaluationError"
    assert "secureboot=false" in result.reason
    assert "=> deny()" in result.reason


def test_revoked_shim_denied_by_dbx(e2e: Any, vms: Any) -> None:
    with e2e.lab.running("rhel8") as vm:
        result = attest_once(vm.tcti, vms["rhel8"].log_path.read_bytes(), e2e.url, ca=e2e.ca)
    assert result.verdict == "deny"
    assert "default-securebootkeysvalidated=false" in result.reason


def _mutated(body: bytes, mutate: Any) -> bytes:
    inner = json.loads(base64.urlsafe_b64decode(json.loads(body)["AttestationInfo"] + "=="))
    mutate(inner)
    token = base64.urlsafe_b64encode(json.dumps(inner).encode()).rstrip(b"=").decode()
    return json.dumps({"AttestationInfo": token}).encode()


def _flip(b64: str, at: int = -1) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


FORGERIES = {
    "quote_signature": lambda i: i["TpmInfo"].update(
        PcrSignature=_flip(i["TpmInfo"]["PcrSignature"])),
    "pcr_digest": lambda i: i["TpmInfo"]["PCRs"][0].update(
        Digest=base64.b64encode(b"\x42" * 32).decode()),
    "log_replay": lambda i: i.update(TcgLogs=base64.b64encode(
        (SHARED_LOGS / "go-tpm-tools/ubuntu-2104-no-secure-boot.bin").read_bytes()).decode()),
    "enc_key_certified": lambda i: i["TpmInfo"].update(
        EncKeyCertifyInfoSignature=_flip(i["TpmInfo"]["EncKeyCertifyInfoSignature"])),
    "aik_certificate": lambda i: i["TpmInfo"].update(AikCert=_flip(i["TpmInfo"]["AikCert"], 200)),
}



@pytest.fixture(scope="module")
def cos_request(e2e: Any, vms: Any) -> bytes:
    with e2e.lab.running("cos") as vm, open_tpm(vm.tcti) as esys:
        return collect_from(esys, tcg_log=vms["cos"].log_path.read_bytes()).request_body()


@pytest.fixture(scope="module")
def nonce_quote(e2e: Any, vms: Any) -> tuple[str, str]:
    """A genuine quote of the cos VM's AIK over PCR 0-7, but with qualifying data."""
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import TPM2B_DATA, TPMT_SIG_SCHEME

    from bootwatch.agent.tpm import AIK_HANDLE, pcr_selection, persistent

    with e2e.lab.running("cos") as vm, open_tpm(vm.tcti) as esys:
        quoted, sig = esys.quote(persistent(esys, AIK_HANDLE), pcr_selection(range(8)),
                                 TPM2B_DATA(b"server-nonce"), TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    raw_sig = bytes(sig.signature.rsassa.sig)
    return base64.b64encode(bytes(quoted)).decode(), base64.b64encode(raw_sig).decode()


def test_quote_with_a_nonce_is_refused(e2e: Any, cos_request: bytes,
                                       nonce_quote: tuple[str, str]) -> None:
    def mutate(inner: dict[str, Any]) -> None:
        inner["TpmInfo"]["PcrQuote"], inner["TpmInfo"]["PcrSignature"] = nonce_quote

    with _client(e2e) as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=_mutated(cos_request, mutate))
    assert r.status_code == 400
    assert "'quote_nonce'" in r.json()["error"]["message"], r.text


def test_truncated_and_oversized(e2e: Any, cos_request: bytes) -> None:
    def truncate(inner: dict[str, Any]) -> None:
        raw = base64.b64decode(inner["TpmInfo"]["PcrQuote"])
        inner["TpmInfo"]["PcrQuote"] = base64.b64encode(raw[:40]).decode()

    with _client(e2e) as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=_mutated(cos_request, truncate))
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidParameter"
        assert "PcrQuote" in r.text or "quote" in r.json()["error"]["message"], r.text
        r = c.post(f"/attest/AzureGuest{Q}", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
        assert r.status_code == 413


def _bad_key_evidence(e2e: Any, kind: str) -> dict[str, str]:
    """A key the cos VM's AIK certifies genuinely, but which is not a proper ephemeral key."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
    from tpm2_pytss.types import TPM2B_DATA, TPM2B_DIGEST, TPMT_SIG_SCHEME

    from bootwatch.agent.tpm import (
        AIK_HANDLE,
        ephemeral_key_template,
        flushing,
        pcr_policy_digest,
        persistent,
    )

    with e2e.lab.running("cos") as vm, open_tpm(vm.tcti) as esys:
        tpl = ephemeral_key_template(pcr_policy_digest(esys, range(8)))
        if kind == "enc_key_attributes":
            tpl.publicArea.objectAttributes |= TPMA_OBJECT.SIGN_ENCRYPT
        else:
            tpl.publicArea.authPolicy = TPM2B_DIGEST(b"")
        handle, public, *_ = esys.create_primary(None, tpl, ESYS_TR.NULL)
        with flushing(esys, handle):
            info, sig = esys.certify(handle, persistent(esys, AIK_HANDLE), TPM2B_DATA(),
                                     TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    return {
        "EncKeyPub": base64.b64encode(public.marshal()).decode(),
        "EncKeyCertifyInfo": base64.b64encode(bytes(info)).decode(),
        "EncKeyCertifyInfoSignature": base64.b64encode(bytes(sig.signature.rsassa.sig)).decode(),
    }


@pytest.mark.parametrize("check", ["enc_key_attributes", "enc_key_pcr_policy"])
def test_improper_ephemeral_key(e2e: Any, cos_request: bytes, check: str) -> None:
    fields = _bad_key_evidence(e2e, check)
    with _client(e2e) as c:
        r = c.post(f"/attest/AzureGuest{Q}",
                   content=_mutated(cos_request, lambda i: i["TpmInfo"].update(fields)))
    assert r.status_code == 400
    assert f"'{check}'" in r.json()["error"]["message"], r.text


def test_expired_aik_certificate(e2e: Any, cos_request: bytes) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    inner = json.loads(base64.urlsafe_b64decode(json.loads(cos_request)["AttestationInfo"] + "=="))
    real = x509.load_der_x509_certificate(base64.b64decode(inner["TpmInfo"]["AikCert"]))
    ca = e2e.lab.ca
    past = datetime.now(UTC) - timedelta(days=30)
    expired = (
        x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
        .public_key(real.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(past - timedelta(days=1)).not_valid_after(past)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                     False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.3")]),
                       critical=False)
        .sign(ca.issuer_key, hashes.SHA256())
    )
    der = base64.b64encode(expired.public_bytes(serialization.Encoding.DER)).decode()
    with _client(e2e) as c:
        r = c.post(f"/attest/AzureGuest{Q}",
                   content=_mutated(cos_request, lambda i: i["TpmInfo"].update(AikCert=der)))
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "'aik_certificate'" in msg and "expire" in msg.lower(), msg


@pytest.fixture(scope="module")
def other_request(e2e: Any, vms: Any) -> dict[str, Any]:
    """The TpmInfo of another VM (another AIK, another ephemeral key)."""
    with e2e.lab.running("sboff") as vm, open_tpm(vm.tcti) as esys:
        body = collect_from(esys, tcg_log=vms["sboff"].log_path.read_bytes()).request_body()
    inner = json.loads(base64.urlsafe_b64decode(json.loads(body)["AttestationInfo"] + "=="))
    return dict(inner["TpmInfo"])


CROSS_VM = {
    # another vTPM's certified key: its certify is by another AIK
    "enc_key_certified": ("EncKeyPub", "EncKeyCertifyInfo", "EncKeyCertifyInfoSignature"),
    # another VM's AIK (public key and certificate): the quote no longer verifies
    "quote_signature": ("AikPub", "AikCert"),
    # a valid lab AIK certificate, but for another VM's AIK
    "aik_certificate": ("AikCert",),
}


@pytest.mark.parametrize("check", sorted(CROSS_VM))
def test_cross_vm_forgeries(e2e: Any, cos_request: bytes, other_request: dict[str, Any],
                            check: str) -> None:
    def mutate(inner: dict[str, Any]) -> None:
        for name in CROSS_VM[check]:
            inner["TpmInfo"][name] = other_request[name]

    with _client(e2e) as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=_mutated(cos_request, mutate))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "InvalidParameter"
    assert f"'{check}'" in r.json()["error"]["message"], r.json()["error"]["message"]


def test_certify_passed_as_quote(e2e: Any, cos_request: bytes) -> None:
    def mutate(inner: dict[str, Any]) -> None:
        tpm = inner["TpmInfo"]
        tpm["PcrQuote"], tpm["PcrSignature"] = (tpm["EncKeyCertifyInfo"],
                                                tpm["EncKeyCertifyInfoSignature"])

    with _client(e2e) as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=_mutated(cos_request, mutate))
    assert r.status_code == 400
    assert "'quote_structure'" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("check", sorted(FORGERIES))
def test_forged_evidence_is_400_with_its_reason(e2e: Any, cos_request: bytes, check: str) -> None:
    with _client(e2e) as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=_mutated(cos_request, FORGERIES[check]))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "InvalidParameter"
    assert f"'{check}'" in err["message"] or check in err["message"], err["message"]


def test_replayed_request_still_permitted_but_only_this_vtpm_opens_it(
    e2e: Any, cos_request: bytes
) -> None:
    """The protocol has no server nonce: a replay gets a token, sealed to the original vTPM."""
    with _client(e2e) as c:
        r = c.post(f"/attest/AzureGuest{Q}", content=cos_request)
    assert r.status_code == 200
    env = decode_token_response(r.content)
    with e2e.lab.running("sboff") as other, open_tpm(other.tcti) as esys:
        from bootwatch.errors import BootwatchError

        with pytest.raises(BootwatchError):
            open_envelope(esys, env)
