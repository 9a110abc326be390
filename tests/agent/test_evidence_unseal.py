"""The collector and the unsealer against a real swtpm lab VM."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tpm2_pytss.constants import TPM2_ALG, TPM2_CAP, TPM2_HR, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC, TPMS_ATTEST

from bootwatch.agent.evidence import (
    CollectedEvidence,
    OsInfo,
    collect_evidence,
    default_pcr_selection,
)
from bootwatch.agent.tpm import open_tpm
from bootwatch.agent.unseal import PcrsChangedError, UnwrapError, unseal
from bootwatch.cli.main import cli
from bootwatch.errors import CryptoError, TpmDeviceError
from bootwatch.eventlog import parse_log, replay
from bootwatch.lab import Lab, LabVm
from bootwatch.protocol.azureguest import decode_request

pytestmark = pytest.mark.swtpm

TPM_GENERATED = 0xFF544347
ST_ATTEST_QUOTE, ST_ATTEST_CERTIFY = 0x8018, 0x8017
CC_POLICY_PCR = 0x0000017F


def _rsa_key(tpm2b_public: bytes) -> rsa.RSAPublicKey:
    pub, _ = TPM2B_PUBLIC.unmarshal(tpm2b_public)
    key = serialization.load_pem_public_key(pub.publicArea.to_pem())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def _verify_rsassa(key: rsa.RSAPublicKey, sig: bytes, msg: bytes) -> None:
    key.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())


def _seal(jws: str, key: rsa.RSAPublicKey, aes_key: bytes | None = None) -> bytes:
    """Seal like MAA, with cryptography only: RSAES-PKCS1v15 + AES-256-GCM, AAD Transport Key."""
    aes_key = aes_key or AESGCM.generate_key(bit_length=256)
    iv = os.urandom(12)
    ct = AESGCM(aes_key).encrypt(iv, jws.encode(), b"Transport Key")
    env = {
        "Jwt": base64.b64encode(ct[:-16]).decode(),
        "EncryptedInnerKey": base64.b64encode(key.encrypt(aes_key, padding.PKCS1v15())).decode(),
        "EncryptionParams": {"BlockMode": "ChainingModeGCM", "BlockPadding": "PKCS7",
                             "Cipher": "AES", "KeySizeInBits": 256,
                             "Iv": base64.b64encode(iv).decode()},
        "AuthenticationData": base64.b64encode(ct[-16:]).decode(),
    }
    token = base64.urlsafe_b64encode(json.dumps(env).encode()).rstrip(b"=").decode()
    return json.dumps({"token": token}).encode()


@pytest.fixture(scope="module")
def collected(lab: Lab, agent_vm: LabVm) -> CollectedEvidence:
    with lab.running(agent_vm.name) as run:
        return collect_evidence(
            run.tcti,
            tcg_log=agent_vm.log_path.read_bytes(),
            os_info=OsInfo(distro="Ubuntu", version_major=22, version_minor=4),
            client_payload={"nonce": "n-123"},
            pcr_indices=tuple(range(8)),  # Microsoft's Linux client's selection
        )


def test_default_selection_adds_the_late_boot_pcrs_the_log_extends(
    lab: Lab, agent_vm: LabVm
) -> None:
    log = agent_vm.log_path.read_bytes()
    late = sorted({e.pcr for e in parse_log(log).events if 8 <= e.pcr <= 15
                   and e.event_type != 3})  # EV_NO_ACTION extends nothing
    assert late, "the agent VM's log should measure a bootloader or kernel (PCR 8-15)"
    assert default_pcr_selection(log) == tuple(range(8)) + tuple(late)
    with lab.running(agent_vm.name) as run:
        ev = collect_evidence(run.tcti, tcg_log=log,
                              os_info=OsInfo(distro="Ubuntu", version_major=22, version_minor=4))
    assert decode_request(ev.request_body()).tpm_info.pcr_set == tuple(range(8)) + tuple(late)
    # a log that cannot be framed falls back to 0-7 (the service names what is wrong)
    assert default_pcr_selection(b"not a log") == tuple(range(8))


def test_request_decodes_with_protocol_decoder(collected: CollectedEvidence,
                                               agent_vm: LabVm) -> None:
    req = decode_request(collected.request_body())
    assert req.protocol_version == "2.0"
    assert req.isolation_type == "TrustedLaunch"
    assert (req.os_type, req.os_distro, req.os_version_major, req.os_version_minor) == (
        "Linux", "Ubuntu", 22, 4)
    assert req.client_payload == {"nonce": "n-123"}
    assert req.tcg_logs == agent_vm.log_path.read_bytes()
    ti = req.tpm_info
    assert ti.pcr_set == tuple(range(8))
    assert ti.aik_cert == agent_vm.aik_cert.public_bytes(serialization.Encoding.DER)
    rep = replay(parse_log(req.tcg_logs))
    assert dict(ti.pcrs) == {i: rep.pcrs[int(TPM2_ALG.SHA256)][i] for i in range(8)}


def test_quote_verifies_against_aikpub(collected: CollectedEvidence) -> None:
    aik = _rsa_key(collected.aik_pub)
    _verify_rsassa(aik, collected.pcr_signature, collected.pcr_quote)
    assert len(collected.pcr_signature) == 256
    att, _ = TPMS_ATTEST.unmarshal(collected.pcr_quote)
    assert att.magic == TPM_GENERATED and att.type == ST_ATTEST_QUOTE
    assert bytes(att.extraData) == b""  # empty qualifying data, as AzureGuest
    composite = b"".join(collected.pcrs[i] for i in range(8))
    assert bytes(att.attested.quote.pcrDigest) == hashlib.sha256(composite).digest()
    # the AIK certificate's key is AikPub's key
    cert = x509.load_der_x509_certificate(collected.aik_cert)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*spki) == aik.public_bytes(*spki)


def test_ephemeral_key_is_certified_and_pcr_bound(collected: CollectedEvidence) -> None:
    _verify_rsassa(_rsa_key(collected.aik_pub), collected.enc_key_certify_signature,
                   collected.enc_key_certify_info)
    att, _ = TPMS_ATTEST.unmarshal(collected.enc_key_certify_info)
    assert att.magic == TPM_GENERATED and att.type == ST_ATTEST_CERTIFY
    assert bytes(att.extraData) == b""
    pub, _ = TPM2B_PUBLIC.unmarshal(collected.enc_key_pub)
    name = struct.pack(">H", int(TPM2_ALG.SHA256)) + hashlib.sha256(
        pub.publicArea.marshal()).digest()
    assert bytes(att.attested.certify.name) == name
    area = pub.publicArea
    want = (TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.NODA)
    assert int(area.objectAttributes) == int(want)
    assert area.nameAlg == TPM2_ALG.SHA256 and area.type == TPM2_ALG.RSA
    assert area.parameters.rsaDetail.keyBits == 2048
    assert area.parameters.rsaDetail.scheme.scheme == TPM2_ALG.NULL
    # authPolicy = PolicyPCR(sha256: 0-7) over the quoted values, computed here by hand
    selection = struct.pack(">IHB3B", 1, int(TPM2_ALG.SHA256), 3, 0xFF, 0, 0)
    composite = hashlib.sha256(b"".join(collected.pcrs[i] for i in range(8))).digest()
    policy = hashlib.sha256(
        bytes(32) + struct.pack(">I", CC_POLICY_PCR) + selection + composite).digest()
    assert bytes(area.authPolicy) == policy


def test_collector_flushes_everything(lab: Lab, agent_vm: LabVm,
                                      collected: CollectedEvidence) -> None:
    with lab.running(agent_vm.name) as run:
        again = collect_evidence(run.tcti, tcg_log=b"")
        with open_tpm(run.tcti) as esys:
            _, transient = esys.get_capability(TPM2_CAP.HANDLES, TPM2_HR.TRANSIENT, 16)
            _, sessions = esys.get_capability(TPM2_CAP.HANDLES, TPM2_HR.HMAC_SESSION, 16)
            assert transient.data.handles.count == 0
            assert sessions.data.handles.count == 0
    # within one boot and unchanged PCRs, the ephemeral key is the same key
    assert again.enc_key_pub == collected.enc_key_pub


def test_unseal_opens_then_refuses_after_pcr_change(lab: Lab, agent_vm: LabVm) -> None:
    vm = lab.create_vm("unseal", agent_vm.log_path)
    with lab.running(vm.name) as run:
        ev = collect_evidence(run.tcti, tcg_log=b"")
    body = _seal("eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln", _rsa_key(ev.enc_key_pub))
    with lab.running(vm.name) as run:  # a fresh swtpm process, same boot
        assert unseal(run.tcti, body, quoted_pcrs=ev.pcrs) == (
            "eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln")
        assert unseal(run.tcti, body).startswith("eyJ")
        # a tampered envelope fails the AES-GCM step
        env = json.loads(base64.urlsafe_b64decode(json.loads(body)["token"] + "=="))
        env["AuthenticationData"] = base64.b64encode(bytes(16)).decode()
        bad = json.dumps({"token": base64.urlsafe_b64encode(json.dumps(env).encode()).decode()})
        with pytest.raises(CryptoError):
            unseal(run.tcti, bad.encode(), quoted_pcrs=ev.pcrs)
        run.extend_pcr(7, b"a new Secure Boot variable")
        with pytest.raises(PcrsChangedError, match="PCRs changed since the quote") as info:
            unseal(run.tcti, body, quoted_pcrs=ev.pcrs)
        assert info.value.changed == (7,)
        assert isinstance(info.value, TpmDeviceError)
        with pytest.raises(UnwrapError, match="PCRs changed since the quote"):
            unseal(run.tcti, body)
        run.reboot()  # PCRs back to the log's values, but a new null seed
        with pytest.raises(UnwrapError):
            unseal(run.tcti, body, quoted_pcrs=ev.pcrs)
    lab.destroy_vm(vm.name)


def test_cli_evidence_and_unseal(lab: Lab, agent_vm: LabVm, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "req.json"
    osr = tmp_path / "os-release"
    osr.write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    res = runner.invoke(cli, ["agent", "evidence", "--lab-dir", str(lab.root), "--lab-vm",
                              agent_vm.name, "--os-release", str(osr), "--payload", "k=v",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    req = decode_request(out.read_bytes())
    assert req.os_distro == "Debian GNU/Linux" and req.os_version_major == 12
    assert req.client_payload == {"k": "v"}
    assert req.tcg_logs == agent_vm.log_path.read_bytes()
    resp = tmp_path / "resp.json"
    resp.write_bytes(_seal("a.b.c", _rsa_key(req.tpm_info.enc_key_pub)))
    res = runner.invoke(cli, ["agent", "unseal", str(resp), "--lab-dir", str(lab.root),
                              "--lab-vm", agent_vm.name, "--request", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "a.b.c"


def test_collect_without_aik_is_a_typed_error(lab: Lab, agent_vm: LabVm,
                                              tmp_path: Path) -> None:
    """A TPM without Azure's AIK (here: a bare swtpm) fails with TpmDeviceError, not a trace."""
    from bootwatch.lab.swtpm import SwtpmProcess

    state = tmp_path / "bare"
    state.mkdir()
    sw = SwtpmProcess.start(state)
    try:
        sw.init()
        sw.startup_clear()
        with pytest.raises(TpmDeviceError, match="0x01c101d0"):
            collect_evidence(sw.tcti, tcg_log=b"")
    finally:
        sw.stop(save=False)


def test_lab_evidence_passes_the_verifier(lab: Lab, collected: CollectedEvidence) -> None:
    """End to end with bootwatch's own verifier and the lab CA bundle as trust anchors."""
    import datetime

    from bootwatch.attest.evidence import verify_evidence
    from bootwatch.tpm.aik import TrustAnchors

    anchors = TrustAnchors.from_pem([lab.ca_cert_path.read_bytes()])
    result = verify_evidence(decode_request(collected.request_body()), trust_anchors=anchors,
                             at=datetime.datetime.now(datetime.UTC))
    failed = [(c.name, c.reason) for c in result.checks if not c.passed]
    assert failed == []
    assert {c.name for c in result.checks} >= {
        "quote_signature", "quote_structure", "quote_nonce", "pcr_digest", "log_replay",
        "enc_key_certified", "enc_key_attributes", "enc_key_pcr_policy", "aik_certificate"}


def test_ephemeral_key_context_is_reused_only_for_the_same_key(
        lab: Lab, agent_vm: LabVm, tmp_path: Path) -> None:
    """The daemon keeps the ephemeral key's TPM context between cycles: loaded again
    only while it is the very key CreatePrimary would derive (same boot, same PCR
    policy), derived again otherwise."""
    from collections.abc import Mapping

    from tpm2_pytss import ESAPI

    from bootwatch.agent.tpm import ATTESTED_PCRS, create_ephemeral_key, read_pcrs

    cache = tmp_path / "ephemeral-key.ctx"

    def key(esys: ESAPI, values: Mapping[int, bytes]) -> tuple[bytes, bytes, int]:
        handle, public = create_ephemeral_key(esys, ATTESTED_PCRS, values, cache=cache)
        esys.flush_context(handle)
        area = public.publicArea
        return bytes(area.unique.rsa), bytes(area.authPolicy), cache.stat().st_mtime_ns

    with lab.running(agent_vm.name) as vm:
        with open_tpm(vm.tcti) as esys:
            now = read_pcrs(esys, ATTESTED_PCRS)
            first, policy, saved = key(esys, now)
            assert len(first) == 256 and cache.stat().st_size > 0
            assert key(esys, now) == (first, policy, saved)  # loaded, file untouched
            moved = {i: bytes([i + 1]) * 32 for i in ATTESTED_PCRS}
            other, other_policy, _ = key(esys, moved)  # another policy: derived again
            assert other != first and other_policy != policy
            cache.write_bytes(b"\x00\x01" * 20)  # a damaged file: derived again
            assert key(esys, now)[:2] == (first, policy)
        vm.reboot()  # a TPM reset: new null seed, the saved context no longer loads
        with open_tpm(vm.tcti) as esys:
            after, after_policy, _ = key(esys, read_pcrs(esys, ATTESTED_PCRS))
            assert after_policy == policy and after != first


def test_pcr_policy_digest_in_software_is_the_tpms(lab: Lab, agent_vm: LabVm) -> None:
    """The PolicyPCR digest computed without the TPM (given values) equals what the
    TPM's trial session gives, for the current values and for other ones."""
    from bootwatch.agent.tpm import pcr_policy_digest, read_pcrs

    with lab.running(agent_vm.name) as vm, open_tpm(vm.tcti) as esys:
        for indices in ((0, 1, 2, 3, 4, 5, 6, 7), (0, 2, 4, 7, 11, 14), (23,)):
            now = read_pcrs(esys, indices)
            by_tpm = pcr_policy_digest(esys, indices)  # trial session, current values
            assert pcr_policy_digest(esys, indices, now) == by_tpm
            other = {i: hashlib.sha256(bytes([i])).digest() for i in indices}
            assert pcr_policy_digest(esys, indices, other) != by_tpm
        # a trial session over given values (the TPM takes the pcrDigest unchecked)
        from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
        from tpm2_pytss.types import TPM2B_DIGEST, TPMT_SYM_DEF

        from bootwatch.agent.tpm import pcr_composite_digest, pcr_selection

        indices = (0, 1, 2, 3, 4, 5, 6, 7)
        other = {i: hashlib.sha256(bytes([i])).digest() for i in indices}
        session = esys.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL,
                                          TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                                          TPM2_ALG.SHA256)
        esys.policy_pcr(session, TPM2B_DIGEST(pcr_composite_digest(other, indices)),
                        pcr_selection(indices))
        assert bytes(esys.policy_get_digest(session)) == pcr_policy_digest(esys, indices, other)
        esys.flush_context(session)
