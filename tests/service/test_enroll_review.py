"""Enrolment review fixes (found in review; each test failed on the code before).

- A certificate an EK anchor signed that is not an EK certificate (here a maker's TLS
  certificate, whose key lives in software) let a client with no TPM answer the
  credential in software and get an AIK certificate for a software key.
- One TPM with two certified EKs (RSA and ECC, as makers ship them) enrolled its one AIK
  as two VM ids, so every quote it signed passed as either VM.
- Every re-enrolment added a revoked ("superseded") row that the provider's revocation
  set loaded on each cache refresh for ever, expired or not.
"""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bootwatch.lab import Lab
from bootwatch.protocol.enroll import encode_challenge_request
from bootwatch.tpm.constants import ObjectAttributes as Attr
from bootwatch.tpm.constants import TpmAlg
from bootwatch.tpm.marshal import tpm2b
from bootwatch.tpm.public import (
    RsaParms,
    Scheme,
    SymDefObject,
    marshal_tpmt_public,
    parse_tpm2b_public,
)

Q = "?api-version=2020-10-01"
NOW = datetime.datetime.now(datetime.UTC)
LOG_NAME = "go-tpm-tools/rhel8-uefi.bin"


def _cert(subject: str, key: Any, issuer: x509.Certificate | None, issuer_key: Any, *,
          ca: bool, eku: Any = None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - datetime.timedelta(hours=1))
         .not_valid_after(NOW + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _rsa_public(key: rsa.RSAPrivateKey, attrs: int, sym: SymDefObject, scheme: Scheme) -> bytes:
    n = key.public_key().public_numbers().n.to_bytes(256, "big")
    return tpm2b(marshal_tpmt_public(key_type=TpmAlg.RSA, name_alg=TpmAlg.SHA256,
                                     object_attributes=int(attrs), auth_policy=b"",
                                     parameters=RsaParms(sym, scheme, 2048, 0), unique=n))


def test_a_certificate_that_is_no_ek_certificate_cannot_enrol(
        service_factory: Any, tmp_path: Path, backend: Any) -> None:
    if backend.name != "sqlite":
        pytest.skip("the check is before any storage: SQLite is enough")
    root_key = rsa.generate_private_key(65537, 2048)
    root = _cert("TPM Maker Root CA", root_key, None, root_key, ca=True)
    (tmp_path / "maker-root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    other_key = rsa.generate_private_key(65537, 2048)  # a TLS certificate's key, in software
    other = _cert("downloads.tpm-maker.example", other_key, root, root_key, ca=False,
                  eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    svc = service_factory(ek_trust_anchors_path=str(tmp_path / "maker-root.pem"))
    ek_pub = _rsa_public(other_key, Attr.FIXED_TPM | Attr.FIXED_PARENT | Attr.SENSITIVE_DATA_ORIGIN
                         | Attr.ADMIN_WITH_POLICY | Attr.RESTRICTED | Attr.DECRYPT,
                         SymDefObject(TpmAlg.AES, 128, TpmAlg.CFB), Scheme(TpmAlg.NULL))
    soft_aik = rsa.generate_private_key(65537, 2048)  # never in any TPM
    aik_pub = _rsa_public(soft_aik, Attr.FIXED_TPM | Attr.FIXED_PARENT | Attr.SENSITIVE_DATA_ORIGIN
                          | Attr.USER_WITH_AUTH | Attr.RESTRICTED | Attr.SIGN_ENCRYPT,
                          SymDefObject(TpmAlg.NULL), Scheme(TpmAlg.RSASSA, TpmAlg.SHA256))
    name = parse_tpm2b_public(aik_pub).name
    with svc.client() as c:
        r = c.post(f"/enroll/challenge{Q}", headers={"Content-Type": "application/json"},
                   content=encode_challenge_request(
                       other.public_bytes(serialization.Encoding.DER), ek_pub, aik_pub,
                       name, str(uuid.uuid4())))
        assert r.status_code == 400, r.text
        assert "tcg-kp-EKCertificate" in r.json()["error"]["message"]
        # (on the code before: 200, and round two answered in software got a certificate)
        # a CA certificate is no EK certificate either
        ca_leaf = _cert("Maker Sub CA", other_key, root, root_key, ca=True)
        r = c.post(f"/enroll/challenge{Q}", headers={"Content-Type": "application/json"},
                   content=encode_challenge_request(
                       ca_leaf.public_bytes(serialization.Encoding.DER), ek_pub, aik_pub,
                       name, str(uuid.uuid4())))
        assert r.status_code == 400 and "is a CA certificate" in r.text, r.text


@pytest.mark.swtpm
def test_one_aik_is_certified_for_one_vm_id(service_factory: Any, lab: Lab,
                                            backend: Any, corpus: Path) -> None:
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_DIGEST, TPM2B_PUBLIC

    from bootwatch.agent.client import AttestationClient
    from bootwatch.agent.enroll import (
        _EK_ATTRS,
        EK_POLICY_A_SHA256,
        aik_name,
        enroll_tpm,
        ensure_aik,
        load_ek,
    )
    from bootwatch.agent.tpm import open_tpm
    from bootwatch.errors import ServiceError
    from bootwatch.x509build import key_usage

    if backend.name != "sqlite":
        pytest.skip("SQLite is enough")
    svc = service_factory(ek_trust_anchors_path=str(lab.ek_ca_cert_path))
    vm = lab.create_vm(f"two-ek-{uuid.uuid4().hex[:6]}", corpus / "eventlogs" / LOG_NAME,
                       aik_cert=False)
    vm_a, vm_b = str(uuid.uuid4()), str(uuid.uuid4())
    with lab.running(vm.name) as run, open_tpm(run.tcti) as esys, \
            AttestationClient(svc.url, ca=Path(svc.ca)) as client:
        # the maker's second EK certificate: ECC P-256, TCG low-range template (policy A)
        tpl = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=_EK_ATTRS)
        tpl.publicArea.authPolicy = TPM2B_DIGEST(EK_POLICY_A_SHA256)
        tpl.publicArea.unique.ecc.x = bytes(32)
        tpl.publicArea.unique.ecc.y = bytes(32)
        handle, pub, *_ = esys.create_primary(None, tpl, ESYS_TR.ENDORSEMENT)
        esys.flush_context(handle)
        ecc_key = serialization.load_pem_public_key(pub.publicArea.to_pem())
        ecc_cert = lab.ek_ca._issue(ecc_key, f"{vm.name} ECC EK", None,  # type: ignore[arg-type]
                                    key_usage("key_agreement"),
                                    x509.ObjectIdentifier("2.23.133.8.1"))
        assert enroll_tpm(esys, client, vm_a).outcome == "enrolled"  # RSA EK, VM A
        der = ecc_cert.public_bytes(serialization.Encoding.DER)
        with load_ek(esys, der) as (_, ek_pub):
            _, aik_pub = ensure_aik(esys)
            with pytest.raises(ServiceError) as exc:  # the ECC EK, the same AIK, VM B
                client.enroll_challenge(encode_challenge_request(
                    der, ek_pub.marshal(), aik_pub.marshal(), aik_name(aik_pub), vm_b))
    assert exc.value.status == 400 and "aik_pub" in exc.value.message
    assert f"certified for VM {vm_a.upper()}" in exc.value.message


def test_expired_revoked_certificates_leave_the_revocation_set(svc: Any) -> None:
    """Revoked certificates past their notAfter fail the chain anyway; the set loaded on
    every cache refresh keeps the unexpired ones only."""
    from bootwatch.service.aikca import load_aik_ca
    from bootwatch.service.models import AikCertificateRow

    state = svc.state
    now = datetime.datetime.now(datetime.UTC)
    with state.db.session() as s:
        assert load_aik_ca(s, state.sealer, "aadp", now, create=True) is not None
        for serial, not_after in (("e1", now - datetime.timedelta(days=1)),
                                  ("e2", now + datetime.timedelta(days=1))):
            s.add(AikCertificateRow(serial=serial, provider="aadp", vm_id="VM-X",
                                    aik_name="00", ek_cert_sha256="00" * 32, cert_der=b"",
                                    issued_at=now - datetime.timedelta(days=2),
                                    not_after=not_after, revoked_at=now,
                                    revoke_reason="superseded"))
    state.enrollment.invalidate("aadp")
    revoked = state.enrollment._trust("aadp").revoked
    assert {serial for (_, serial) in revoked.entries} == {0xE2}
