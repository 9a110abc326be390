"""Enrol this machine's TPM with a provider: EK certificate in, AIK certificate out.

A TPM with only its maker's EK certificate (a KVM/swtpm, GCE, VMware or Hyper-V vTPM,
a bare-metal TPM) has no AIK certificate, so no provider can trust its quotes.  The
agent proves to the provider that the AIK lives in the same TPM as the certified EK,
with TPM2_ActivateCredential (the provider made the credential for that EK and that
AIK name, see :mod:`bootwatch.tpm.credential`), and stores the AIK certificate it gets
back where Azure keeps it (NV ``0x01C101D0``), so ``agent attest`` and ``agent run``
work unchanged afterwards.

TPM side (tpm2-pytss): the EK certificate is read from the TCG NV indices, the EK is
the persistent one whose key matches that certificate (else it is created from the
TCG low-range template), the AIK is the persistent ``0x81000003`` (created and made
persistent when absent), and ActivateCredential runs with the EK's policy satisfied
by a PolicySecret(TPM_RH_ENDORSEMENT) session.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_NV, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPMS_NV_PUBLIC,
    TPMT_SYM_DEF,
)

from bootwatch.agent.tpm import (
    AIK_CERT_NV_INDEX,
    AIK_HANDLE,
    flushing,
    nv_chunk_size,
    nv_read_all,
    tpm_call,
)
from bootwatch.errors import TpmDeviceError

if TYPE_CHECKING:
    from bootwatch.agent.client import AttestationClient

__all__ = [
    "AIK_ATTRIBUTES",
    "EK_CERT_NV_INDICES",
    "EK_HANDLES",
    "EkCertificate",
    "EnrollResult",
    "activate_credential",
    "aik_name",
    "dmi_vm_id",
    "enroll_tpm",
    "ensure_aik",
    "load_ek",
    "read_ek_certificate",
    "store_aik_certificate",
]

#: EK certificate NV indices (TCG EK Credential Profile 2.3 §2.2.1.5): RSA 2048 and ECC
#: P-256 (low range), then the high range (RSA 2048, P-256, P-384, P-521, SM2, RSA 3072,
#: RSA 4096).  Read in this order; the first present wins.
EK_CERT_NV_INDICES: tuple[int, ...] = (
    0x01C00002, 0x01C0000A,
    0x01C00012, 0x01C00014, 0x01C00016, 0x01C00018, 0x01C0001A, 0x01C0001C, 0x01C0001E,
)
#: persistent handles where EKs are commonly kept (TCG: 0x81010001; swtpm_setup also
#: 0x81010016 for its P-384 EK)
EK_HANDLES: tuple[int, ...] = (0x81010001, 0x81010002, 0x81010016)
#: what the provider requires of an AIK (and what a created AIK gets), plus userWithAuth
AIK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)
#: TCG EK Credential Profile policy A: PolicySecret(TPM_RH_ENDORSEMENT), SHA-256
EK_POLICY_A_SHA256 = bytes.fromhex(
    "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
_EK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.ADMINWITHPOLICY | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
)
#: the AIK certificate index as the agent defines it (owner-created: on a real machine
#: the platform hierarchy belongs to the firmware)
_AIK_NV_ATTRS = (
    TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA
)


@dataclass(frozen=True)
class EkCertificate:
    """The EK certificate read from NV (not verified here: the provider does that)."""

    nv_index: int
    der: bytes


def read_ek_certificate(esys: ESAPI) -> EkCertificate:
    """The first EK certificate present in :data:`EK_CERT_NV_INDICES`."""
    for index in EK_CERT_NV_INDICES:
        try:
            der = nv_read_all(esys, index)
        except TpmDeviceError:
            continue
        if der:
            return EkCertificate(index, _der_prefix(der))
    raise TpmDeviceError(
        "no EK certificate in NV (looked at " + ", ".join(f"0x{i:08x}" for i in
                                                    EK_CERT_NV_INDICES) +
        "); this TPM's maker did not provision one: it cannot enrol")


def _der_prefix(data: bytes) -> bytes:
    """The DER SEQUENCE at the start of ``data`` (NV indices may be padded after it)."""
    if len(data) < 4 or data[0] != 0x30:
        return data
    first = data[1]
    if first < 0x80:
        end = 2 + first
    else:
        n = first & 0x7F
        if not 1 <= n <= 3 or len(data) < 2 + n:
            return data
        end = 2 + n + int.from_bytes(data[2:2 + n], "big")
    return data[:end] if end <= len(data) else data


def _public_key_der(public: TPM2B_PUBLIC) -> bytes:
    key = serialization.load_pem_public_key(public.publicArea.to_pem())
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_key_der(der: bytes) -> bytes:
    try:
        cert = x509.load_der_x509_certificate(der)
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, TypeError) as exc:
        raise TpmDeviceError(f"the EK certificate in NV cannot be read: {exc}") from None


@contextmanager
def load_ek(esys: ESAPI, ek_cert_der: bytes) -> Iterator[tuple[ESYS_TR, TPM2B_PUBLIC]]:
    """The EK whose key is the certificate's: a persistent one, else created (and flushed).

    Raises TpmDeviceError when neither a persistent EK nor the TCG low-range templates
    (RSA 2048, ECC P-256; policy A) give the certified key.
    """
    want = _cert_key_der(ek_cert_der)
    for handle in EK_HANDLES:
        try:
            tr = esys.tr_from_tpmpublic(handle)
            public, _, _ = esys.read_public(tr)
        except TSS2_Exception:
            continue
        if hmac.compare_digest(_public_key_der(public), want):
            yield tr, public
            return
    for spec, unique in (("rsa2048:aes128cfb", "rsa"), ("ecc256:aes128cfb", "ecc")):
        tpl = TPM2B_PUBLIC.parse(spec, objectAttributes=_EK_ATTRS)
        tpl.publicArea.authPolicy = TPM2B_DIGEST(EK_POLICY_A_SHA256)
        if unique == "rsa":
            tpl.publicArea.unique.rsa = bytes(256)
        else:
            tpl.publicArea.unique.ecc.x = bytes(32)
            tpl.publicArea.unique.ecc.y = bytes(32)
        with tpm_call(f"CreatePrimary (EK, {spec})"):
            tr, public, *_ = esys.create_primary(None, tpl, ESYS_TR.ENDORSEMENT)
        with flushing(esys, tr):
            if hmac.compare_digest(_public_key_der(public), want):
                yield tr, public
                return
    raise TpmDeviceError("no EK in this TPM has the key of its EK certificate (persistent "
                         "handles " + ", ".join(f"0x{h:08x}" for h in EK_HANDLES) +
                         " and the TCG low-range templates were tried)")


def ensure_aik(esys: ESAPI, handle: int = AIK_HANDLE) -> tuple[ESYS_TR, TPM2B_PUBLIC]:
    """The persistent AIK at ``handle``; created (RSA 2048, RSASSA-SHA256, restricted
    signing, under the endorsement hierarchy) and made persistent when absent."""
    try:
        tr = esys.tr_from_tpmpublic(handle)
    except TSS2_Exception:
        tpl = TPM2B_PUBLIC.parse("rsa2048:rsassa-sha256:null", objectAttributes=AIK_ATTRIBUTES)
        with tpm_call("CreatePrimary (AIK)"):
            obj, _, *_ = esys.create_primary(None, tpl, ESYS_TR.ENDORSEMENT)
        with flushing(esys, obj), tpm_call(f"EvictControl AIK -> 0x{handle:08x}"):
            tr = esys.evict_control(ESYS_TR.OWNER, obj, handle)
    with tpm_call(f"ReadPublic AIK 0x{handle:08x}"):
        public, _, _ = esys.read_public(tr)
    return tr, public


def aik_name(public: TPM2B_PUBLIC) -> bytes:
    """The TPM name of a public area: nameAlg || H(TPMT_PUBLIC)."""
    return bytes(public.get_name())


def activate_credential(esys: ESAPI, ek: ESYS_TR, ek_public: TPM2B_PUBLIC, aik: ESYS_TR,
                        credential_blob: bytes, encrypted_secret: bytes) -> bytes:
    """TPM2_ActivateCredential: the secret, released only if the credential was made for
    this TPM's EK and for the key ``aik`` (the TPM checks the integrity HMAC)."""
    blob, _ = TPM2B_ID_OBJECT.unmarshal(credential_blob)
    secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
    with tpm_call("PolicySecret(TPM_RH_ENDORSEMENT) session"):
        session = esys.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), ek_public.publicArea.nameAlg,
        )
    with flushing(esys, session):
        with tpm_call("PolicySecret(TPM_RH_ENDORSEMENT)"):
            esys.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        with tpm_call("ActivateCredential"):
            released = esys.activate_credential(aik, ek, blob, secret,
                                                session1=ESYS_TR.PASSWORD, session2=session)
    return bytes(released)


def store_aik_certificate(esys: ESAPI, der: bytes, index: int = AIK_CERT_NV_INDEX) -> None:
    """Write ``der`` to NV ``index``, replacing what is there (re-enrolment renews)."""
    try:
        nv = esys.tr_from_tpmpublic(index)
    except TSS2_Exception:
        nv = None
    if nv is not None:
        with tpm_call(f"NV_ReadPublic 0x{index:08x}"):
            pub, _ = esys.nv_read_public(nv)
        platform = bool(pub.nvPublic.attributes & TPMA_NV.PLATFORMCREATE)
        with tpm_call(f"NV_UndefineSpace 0x{index:08x}"):
            esys.nv_undefine_space(nv, ESYS_TR.PLATFORM if platform else ESYS_TR.OWNER)
    public = TPM2B_NV_PUBLIC(nvPublic=TPMS_NV_PUBLIC(
        nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=_AIK_NV_ATTRS, dataSize=len(der)))
    with tpm_call(f"NV_DefineSpace 0x{index:08x} ({len(der)} bytes)"):
        nv = esys.nv_define_space(TPM2B_AUTH(), public, auth_handle=ESYS_TR.OWNER)
    chunk = nv_chunk_size(esys)
    with tpm_call(f"NV_Write 0x{index:08x}"):
        for off in range(0, len(der), chunk):
            esys.nv_write(nv, der[off: off + chunk], off, auth_handle=ESYS_TR.OWNER)
    with suppress(TpmDeviceError):
        if nv_read_all(esys, index) == der:
            return
    raise TpmDeviceError(f"NV 0x{index:08x} does not read back the AIK certificate written")


@dataclass(frozen=True)
class EnrollResult:
    """What ``agent enroll`` ended with (also its ``--json`` shape)."""

    outcome: str  # "enrolled", "refused" or "unreachable"
    reason: str
    vm_id: str
    error_code: str | None = None
    step: str | None = None
    serial: str | None = None
    subject: str | None = None
    not_after: str | None = None
    ek_cert_nv_index: str | None = None

    @property
    def exit_code(self) -> int:
        return {"enrolled": 0, "unreachable": 2}.get(self.outcome, 1)


def enroll_tpm(esys: ESAPI, client: AttestationClient, vm_id: str) -> EnrollResult:
    """Both rounds on an open TPM with an open :class:`AttestationClient`.

    Refusals (MAA error bodies) and transport failures come back as results; TPM
    failures raise TpmDeviceError (the CLI turns them into exit 2 with the command).
    """
    from bootwatch.errors import ServiceError, TransportError
    from bootwatch.protocol.enroll import encode_activate_request, encode_challenge_request

    ek_cert = read_ek_certificate(esys)
    with load_ek(esys, ek_cert.der) as (ek, ek_public):
        aik, aik_public = ensure_aik(esys)
        name = aik_name(aik_public)
        index = f"0x{ek_cert.nv_index:08x}"
        try:
            challenge = client.enroll_challenge(encode_challenge_request(
                ek_cert.der, ek_public.marshal(), aik_public.marshal(), name, vm_id))
            secret = activate_credential(esys, ek, ek_public, aik, challenge.credential_blob,
                                         challenge.encrypted_secret)
            enrolled = client.enroll_activate(
                encode_activate_request(challenge.service_context, secret, name))
        except ServiceError as exc:
            if exc.status >= 500:
                return EnrollResult("unreachable", str(exc), vm_id, exc.error_code,
                                    "http_status", ek_cert_nv_index=index)
            reason = exc.message.removeprefix(f"HTTP {exc.status} {exc.error_code}: ")
            return EnrollResult("refused", reason, vm_id, exc.error_code,
                                ek_cert_nv_index=index)
        except TransportError as exc:
            return EnrollResult("unreachable", str(exc), vm_id, step=exc.step,
                                ek_cert_nv_index=index)
    cert = x509.load_der_x509_certificate(enrolled.aik_cert_der)
    if not hmac.compare_digest(
            cert.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo),
            _public_key_der(aik_public)):
        return EnrollResult("refused", "the provider issued a certificate for another key",
                            vm_id, ek_cert_nv_index=index)
    store_aik_certificate(esys, enrolled.aik_cert_der)
    return EnrollResult("enrolled", "AIK certificate issued and stored in NV "
                        f"0x{AIK_CERT_NV_INDEX:08x}", vm_id, serial=f"{cert.serial_number:x}",
                        subject=cert.subject.rfc4514_string(),
                        not_after=cert.not_valid_after_utc.isoformat(),
                        ek_cert_nv_index=index)


def dmi_vm_id(path: str = "/sys/class/dmi/id/product_uuid") -> str | None:
    """The SMBIOS system UUID (what KVM, Hyper-V and Azure set as the VM id), if readable."""
    import uuid as _uuid

    try:
        with open(path, encoding="ascii") as fh:
            return str(_uuid.UUID(fh.read(64).strip())).upper()
    except (OSError, ValueError):
        return None
