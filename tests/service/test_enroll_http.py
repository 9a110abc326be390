"""Enrolment over real HTTPS on loopback with real swtpm lab VMs (SQLite and PostgreSQL).

A lab VM made like a KVM host makes one (EK certificate only, no AIK certificate)
enrols, then attests through the unchanged AzureGuest path; every forged case is
refused with its own check; a revoked AIK certificate is refused at attestation.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from tpm2_pytss.constants import TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC

from bootwatch.agent.client import AttestationClient
from bootwatch.agent.enroll import (
    activate_credential,
    aik_name,
    enroll_tpm,
    ensure_aik,
    load_ek,
    read_ek_certificate,
)
from bootwatch.agent.tpm import AIK_CERT_NV_INDEX, nv_read_all, open_tpm
from bootwatch.cli.agent_attest import attest_once
from bootwatch.errors import ServiceError, TpmDeviceError
from bootwatch.lab import Lab, LabVm
from bootwatch.policy import unsigned_policy_jws
from bootwatch.protocol.enroll import encode_activate_request, encode_challenge_request
from bootwatch.service.aikca import EK_CERT_HASH_OID

pytestmark = pytest.mark.swtpm

SHARED = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
LOG = SHARED / "corpus/eventlogs/go-tpm-tools/rhel8-uefi.bin"
AUTH = {"Authorization": "Bearer test-admin-token-0123456789"}
Q = "?api-version=2020-10-01"
#: permits any verified evidence; the AIK certificate stays required (the default)
PERMIT = "version=1.1; authorizationrules { => permit(); }; issuancerules { };"


@pytest.fixture(scope="module")
def vms(lab: Lab, backend: Any) -> dict[str, LabVm]:
    """Two KVM-like VMs (EK certificate only) and one from another maker's EK CA, fresh for
    each backend (enrolment writes the AIK certificate into the VM's NV)."""
    out = {
        "a": lab.create_vm(f"enr-a-{uuid.uuid4().hex[:6]}", LOG, aik_cert=False),
        "b": lab.create_vm(f"enr-b-{uuid.uuid4().hex[:6]}", LOG, aik_cert=False),
    }
    other = Lab(lab.root / "other-maker")  # its own EK CA: a maker the provider does not trust
    out["stranger"] = other.create_vm(f"stranger-{uuid.uuid4().hex[:6]}", LOG, aik_cert=False)
    return out


@pytest.fixture(scope="module")
def esvc(service_factory: Any, lab: Lab) -> Any:
    from bootwatch.service.providers import ProviderKind, TrustModel, create_provider

    def setup(state: Any) -> None:
        from bootwatch.service.models import ProviderRow

        with state.db.session() as s:
            if s.get(ProviderRow, "enr") is None:
                create_provider(s, state.sealer, "enr", kind=ProviderKind.CUSTOM,
                                trust_model=TrustModel.AAD)

    svc = service_factory(setup, ek_trust_anchors_path=str(lab.ek_ca_cert_path))
    with svc.client() as c:
        r = c.put(f"/providers/enr/policies/AzureGuest{Q}",
                  content=unsigned_policy_jws(PERMIT), headers=AUTH)
        assert r.status_code == 200, r.text
    return svc


def _url(svc: Any) -> str:
    return f"{svc.url}/providers/enr"


@pytest.fixture
def running(lab: Lab) -> Iterator[Any]:
    """Open a VM's TPM: ``with running(vm) as (esys, vm_running)``."""
    from contextlib import contextmanager

    @contextmanager
    def _open(vm: LabVm) -> Iterator[Any]:
        owner = Lab(vm.path.parent.parent)
        with owner.running(vm.name) as run, open_tpm(run.tcti) as esys:
            yield esys, run

    yield _open


def _round_one(esys: Any, client: AttestationClient, vm_id: str,
               aik_public: Any = None) -> tuple[Any, Any, bytes]:
    ek_cert = read_ek_certificate(esys)
    with load_ek(esys, ek_cert.der) as (_, ek_pub):
        _, aik_pub = ensure_aik(esys)
        aik_pub = aik_public or aik_pub
        body = encode_challenge_request(ek_cert.der, ek_pub.marshal(), aik_pub.marshal(),
                                        aik_name(aik_pub), vm_id)
    return client.enroll_challenge(body), aik_pub, aik_name(aik_pub)


def _refused(exc: pytest.ExceptionInfo[ServiceError], check: str) -> None:
    assert exc.value.status == 400 and exc.value.error_code == "EnrollmentRefused", exc.value
    body = exc.value.message.removeprefix("HTTP 400 EnrollmentRefused: ")
    assert body.startswith(f"{check}: "), exc.value.message


def test_kvm_vm_enrols_then_attests_and_revocation_refuses_it(
        esvc: Any, vms: dict[str, LabVm], running: Any) -> None:
    vm = vms["a"]
    with running(vm) as (esys, run), AttestationClient(_url(esvc), ca=Path(esvc.ca)) as client:
        with pytest.raises(TpmDeviceError):  # no AIK certificate yet: it cannot attest
            nv_read_all(esys, AIK_CERT_NV_INDEX)
        result = enroll_tpm(esys, client, vm.vm_id)
        assert (result.outcome, result.exit_code) == ("enrolled", 0), result
        cert = x509.load_der_x509_certificate(nv_read_all(esys, AIK_CERT_NV_INDEX))
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == vm.vm_id.upper()
    ek_hash = cert.extensions.get_extension_for_oid(EK_CERT_HASH_OID).value
    import hashlib

    from cryptography.hazmat.primitives import serialization

    want = hashlib.sha256(vm.ek_cert.public_bytes(serialization.Encoding.DER)).digest()
    assert ek_hash.value == b"\x04\x20" + want  # type: ignore[attr-defined]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > __import__(
        "datetime").timedelta(days=364)

    # the unchanged AzureGuest path: collect, attest, unseal, verify
    with running(vm) as (_, run):
        out = attest_once(run.tcti, vm.log_path.read_bytes(), _url(esvc), ca=Path(esvc.ca))
    assert out.verdict == "permit", out
    assert out.claims["x-ms-azurevm-vmid"] == vm.vm_id.upper()

    # renewal: enrolling again replaces the certificate, the old one is superseded
    with running(vm) as (esys, _), AttestationClient(_url(esvc), ca=Path(esvc.ca)) as client:
        again = enroll_tpm(esys, client, vm.vm_id)
        assert again.outcome == "enrolled" and again.serial != f"{cert.serial_number:x}"
        assert nv_read_all(esys, AIK_CERT_NV_INDEX) != cert.public_bytes(
            serialization.Encoding.DER)

    # revocation: every attestation checks the provider's list
    from bootwatch.service.db import utcnow
    from bootwatch.service.enroll import revoke_aik_certificates

    with esvc.state.db.session() as s:
        gone = revoke_aik_certificates(s, "enr", serial=None, vm_id=vm.vm_id,
                                       reason="disk stolen", now=utcnow())
    assert gone == [again.serial]
    with running(vm) as (_, run):
        out = attest_once(run.tcti, vm.log_path.read_bytes(), _url(esvc), ca=Path(esvc.ca))
    assert out.verdict == "refused", out
    assert "aik_cert_revoked" in out.reason and "disk stolen" in out.reason
    # the revoked TPM may not simply enrol again (found in review: it did, and was issued
    # a fresh certificate at once) ...
    with running(vm) as (esys, _), AttestationClient(_url(esvc), ca=Path(esvc.ca)) as client:
        refused = enroll_tpm(esys, client, vm.vm_id)
    assert refused.outcome == "refused", refused
    assert "vm_id" in refused.reason and "revoked by the operator (disk stolen)" in \
        refused.reason, refused
    # ... until an operator releases the VM id
    from bootwatch.service.enroll import release_vm

    with esvc.state.db.session() as s:
        assert release_vm(s, "enr", vm.vm_id)
    with running(vm) as (esys, _), AttestationClient(_url(esvc), ca=Path(esvc.ca)) as client:
        assert enroll_tpm(esys, client, vm.vm_id).outcome == "enrolled"


def test_untrusted_maker_is_refused(esvc: Any, vms: dict[str, LabVm], running: Any) -> None:
    vm = vms["stranger"]
    with (running(vm) as (esys, _), AttestationClient(_url(esvc), ca=Path(esvc.ca)) as client,
          pytest.raises(ServiceError) as exc):
        _round_one(esys, client, vm.vm_id)
    _refused(exc, "ek_certificate")
    assert "EK manufacturer" in exc.value.message


@pytest.mark.parametrize(("clear", "named"), [
    (TPMA_OBJECT.RESTRICTED, "restricted"), (TPMA_OBJECT.FIXEDTPM, "fixedTPM"),
    (TPMA_OBJECT.SENSITIVEDATAORIGIN, "sensitiveDataOrigin")])
def test_aik_that_is_not_an_aik_is_refused(esvc: Any, vms: dict[str, LabVm], running: Any,
                                           clear: TPMA_OBJECT, named: str) -> None:
    vm = vms["b"]
    with running(vm) as (esys, _), AttestationClient(_url(esvc), ca=Path(esvc.ca)) as client:
        _, real = ensure_aik(esys)
        forged, _ = TPM2B_PUBLIC.unmarshal(real.marshal())
        forged.publicArea.objectAttributes &= ~clear
        with pytest.raises(ServiceError) as exc:
            _round_one(esys, client, vm.vm_id, aik_public=forged)
    _refused(exc, "aik_attributes")
    assert f"not {named}" in exc.value.message


def test_relay_wrong_secret_replay_and_another_vms_id(
        esvc: Any, vms: dict[str, LabVm], running: Any) -> None:
    a, b = vms["a"], vms["b"]
    with AttestationClient(_url(esvc), ca=Path(esvc.ca)) as client:
        with running(a) as (esys, _):
            challenge, _, name_a = _round_one(esys, client, a.vm_id)
        # a second TPM answering round two for the first one's credential (a relay)
        with running(b) as (esys, _):
            ek_cert = read_ek_certificate(esys)
            with load_ek(esys, ek_cert.der) as (ek, ek_pub):
                aik, aik_pub = ensure_aik(esys)
                with pytest.raises(TpmDeviceError, match="ActivateCredential"):
                    activate_credential(esys, ek, ek_pub, aik, challenge.credential_blob,
                                        challenge.encrypted_secret)
                name_b = aik_name(aik_pub)
        with pytest.raises(ServiceError) as exc:
            client.enroll_activate(encode_activate_request(
                challenge.service_context, os.urandom(32), name_b))
        _refused(exc, "relay")
        # a wrong secret for the right key: refused, and the challenge is used up
        with pytest.raises(ServiceError) as exc:
            client.enroll_activate(encode_activate_request(
                challenge.service_context, os.urandom(32), name_a))
        _refused(exc, "secret")
        with running(a) as (esys, _):
            ek_cert = read_ek_certificate(esys)
            with load_ek(esys, ek_cert.der) as (ek, ek_pub):
                aik, _ = ensure_aik(esys)
                secret = activate_credential(esys, ek, ek_pub, aik, challenge.credential_blob,
                                             challenge.encrypted_secret)
        with pytest.raises(ServiceError) as exc:  # the right secret, replayed: too late
            client.enroll_activate(encode_activate_request(
                challenge.service_context, secret, name_a))
        _refused(exc, "replay")
        # a full enrolment of A, then B asks for A's VM id
        with running(a) as (esys, _):
            assert enroll_tpm(esys, client, a.vm_id).outcome == "enrolled"
        with running(b) as (esys, _), pytest.raises(ServiceError) as exc:
            _round_one(esys, client, a.vm_id)
        _refused(exc, "vm_id")
        assert "another TPM" in exc.value.message


def _post(svc: Any, path: str, body: bytes, ctype: str = "application/json") -> Any:
    with svc.client() as c:
        return c.post(f"/providers/enr{path}{Q}", content=body,
                      headers={"Content-Type": ctype})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def good_round_one(lab: Lab, vms: dict[str, LabVm]) -> dict[str, str]:
    vm = vms["b"]
    with Lab(vm.path.parent.parent).running(vm.name) as run, open_tpm(run.tcti) as esys:
        ek_cert = read_ek_certificate(esys)
        with load_ek(esys, ek_cert.der) as (_, ek_pub):
            _, aik_pub = ensure_aik(esys)
            body = encode_challenge_request(ek_cert.der, ek_pub.marshal(), aik_pub.marshal(),
                                            aik_name(aik_pub), vm.vm_id)
    doc: dict[str, str] = json.loads(body)
    return doc


@pytest.mark.parametrize(("field", "value", "says"), [
    ("ek_cert", _b64(b"\x30\x82\x01\x00" + b"\x00" * 40), "not a DER X.509 certificate"),
    ("ek_cert", "%%%", "not base64url"),
    ("aik_pub", "AAE", "truncated"),
    ("aik_name", _b64(b"\x00\x0b" + b"\x01" * 31), "is 34 bytes, not 33"),
    ("vm_id", "not-a-guid", "is not a GUID"),
    ("ek_pub", 17, "must be a base64url string"),
])
def test_bad_round_one_fields_are_400_naming_the_field(
        esvc: Any, good_round_one: dict[str, Any], field: str, value: Any, says: str) -> None:
    doc = dict(good_round_one)
    if field == "aik_pub":  # a TPM2B_PUBLIC whose size field promises more than follows
        raw = base64.urlsafe_b64decode(doc["aik_pub"] + "==")
        value = _b64(raw[:40])
    doc[field] = value
    r = _post(esvc, "/enroll/challenge", json.dumps(doc).encode())
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "InvalidParameter"
    assert err["message"].startswith(f"{field}: ") and says in err["message"], err


def test_content_type_size_and_shape(esvc: Any, good_round_one: dict[str, Any]) -> None:
    body = json.dumps(good_round_one).encode()
    r = _post(esvc, "/enroll/challenge", body, "text/plain")
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("Content-Type: ")
    r = _post(esvc, "/enroll/challenge", b'{"pad": "' + b"x" * 70_000 + b'"}')
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("body: ")
    r = _post(esvc, "/enroll/activate", json.dumps({"secret": "AA"}).encode())
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("aik_name: ")
    r = _post(esvc, "/enroll/activate", json.dumps(
        {"service_context": _b64(os.urandom(80)), "secret": _b64(os.urandom(32)),
         "aik_name": _b64(b"\x00\x0b" + os.urandom(32))}).encode())
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("service_context: ")


def test_without_ek_anchors_enrolment_is_refused(service_factory: Any,
                                                 good_round_one: dict[str, Any]) -> None:
    svc = service_factory()
    with svc.client() as c:
        r = c.post(f"/enroll/challenge{Q}", content=json.dumps(good_round_one).encode(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("enrollment_enabled: ")


@pytest.fixture(scope="module")
def kvm_swtpm(tmp_path_factory: pytest.TempPathFactory, swtpm_available: None
              ) -> Iterator[tuple[Path, Path]]:
    """A vTPM made exactly as a KVM host makes it: ``swtpm_setup --create-ek-cert`` with a
    private swtpm-localca (vtpm-notes section 1).  Yields (state dir, EK CA folder)."""
    import shutil
    import subprocess

    if shutil.which("swtpm_setup") is None or not Path("/usr/bin/swtpm_localca").exists():
        pytest.fail("swtpm_setup / swtpm_localca not installed (run scripts/setup)")
    base = tmp_path_factory.mktemp("swtpm-setup")
    state, ca = base / "state", base / "ca"
    state.mkdir()
    ca.mkdir()
    (ca / "ca.conf").write_text(f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\n"
                                f"issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n")
    (ca / "ca.opt").write_text("--platform-manufacturer Test\n--platform-version 2.1\n"
                               "--platform-model SimVM\n")
    (ca / "setup.conf").write_text(
        f"create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {ca}/ca.conf\n"
        f"create_certs_tool_options = {ca}/ca.opt\nactive_pcr_banks = sha1,sha256\n")
    r = subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--create-ek-cert",
                        "--config", str(ca / "setup.conf"), "--vmid", "kvm-0001", "--overwrite"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    anchors = base / "anchors"
    anchors.mkdir()
    for name in ("issuercert.pem", "swtpm-localca-rootca-cert.pem"):
        shutil.copy(ca / name, anchors / name)
    yield state, anchors


def test_a_vtpm_from_swtpm_setup_enrols(service_factory: Any, kvm_swtpm: tuple[Path, Path]
                                        ) -> None:
    """Interop: the EK certificate swtpm's own local CA writes (NV 0x01C00002, EK persistent at
    0x81010001) is accepted, and the TPM activates the provider's credential."""
    from bootwatch.lab.swtpm import SwtpmProcess

    state, anchors = kvm_swtpm
    svc = service_factory(ek_trust_anchors_path=str(anchors))
    vm_id = str(uuid.uuid4())
    proc = SwtpmProcess.start(state)
    try:
        proc.init()
        proc.startup_clear()
        with open_tpm(proc.tcti) as esys, AttestationClient(svc.url, ca=Path(svc.ca)) as client:
            result = enroll_tpm(esys, client, vm_id)
            assert result.outcome == "enrolled", result
            assert result.ek_cert_nv_index == "0x01c00002"
            cert = x509.load_der_x509_certificate(nv_read_all(esys, AIK_CERT_NV_INDEX))
        assert cert.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME)[0].value == vm_id.upper()
    finally:
        proc.stop(save=False)


def test_an_expired_challenge_is_refused(service_factory: Any, lab: Lab,
                                         vms: dict[str, LabVm], running: Any) -> None:
    import time

    svc = service_factory(ek_trust_anchors_path=str(lab.ek_ca_cert_path),
                          enroll_challenge_ttl_seconds=1)
    vm = vms["b"]
    with running(vm) as (esys, _), AttestationClient(svc.url, ca=Path(svc.ca)) as client:
        challenge, _, name = _round_one(esys, client, vm.vm_id)
        ek_cert = read_ek_certificate(esys)
        with load_ek(esys, ek_cert.der) as (ek, ek_pub):
            aik, _ = ensure_aik(esys)
            secret = activate_credential(esys, ek, ek_pub, aik, challenge.credential_blob,
                                         challenge.encrypted_secret)
        time.sleep(2.1)
        with pytest.raises(ServiceError) as exc:
            client.enroll_activate(encode_activate_request(challenge.service_context, secret,
                                                           name))
    _refused(exc, "service_context")
    assert "expired" in exc.value.message
