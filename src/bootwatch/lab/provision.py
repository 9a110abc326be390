"""Make a bare swtpm look like an Azure Trusted Launch vTPM, and boot it from a log.

Identity (once, at VM creation): SHA-1 + SHA-256 banks, an RSA EK at
``0x81010001`` with its certificate in NV ``0x01C00002``, an AIK (RSA-2048,
restricted signing, RSASSA-SHA256) at ``0x81000003`` with its certificate in NV
``0x01C101D0``, both indices platform-created as on Azure.

Boot (at creation, and whenever the vTPM lost its volatile state): what the
firmware would have done: _TPM_Init, the log's startup locality or H-CRTM
sequence, TPM2_Startup(CLEAR), then every extend of the log into every bank
both the log and the vTPM have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_NV, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_AUTH,
    TPM2B_DIGEST,
    TPM2B_NV_PUBLIC,
    TPM2B_PUBLIC,
    TPML_PCR_SELECTION,
    TPMS_NV_PUBLIC,
    TPMS_PCR_SELECTION,
)

from bootwatch.agent.tpm import (
    AIK_CERT_NV_INDEX,
    AIK_HANDLE,
    EK_CERT_NV_INDEX,
    EK_HANDLE,
    digest_values,
    flushing,
    nv_chunk_size,
    open_tpm,
    tpm_call,
)
from bootwatch.errors import BootwatchError, LabError
from bootwatch.eventlog import EventType, parse_log
from bootwatch.eventlog.replay import replay as replay_log
from bootwatch.lab.ca import LabCa
from bootwatch.lab.swtpm import SwtpmProcess

__all__ = [
    "LAB_BANKS",
    "BootPlan",
    "Identity",
    "allocate_banks",
    "boot",
    "plan_boot",
    "provision_identity",
    "rsa_public_key",
]

#: Banks a lab vTPM has (Azure vTPMs: SHA-1 and SHA-256).
LAB_BANKS: Mapping[int, str] = {int(TPM2_ALG.SHA1): "sha1", int(TPM2_ALG.SHA256): "sha256"}
_ALL_BANKS = (TPM2_ALG.SHA1, TPM2_ALG.SHA256, TPM2_ALG.SHA384, TPM2_ALG.SHA512)

#: TCG EK Credential Profile policy A (PolicySecret(TPM_RH_ENDORSEMENT)), SHA-256.
_EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
_EK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.ADMINWITHPOLICY | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT
)
_AIK_ATTRS = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)
_NV_ATTRS = (
    TPMA_NV.PPWRITE | TPMA_NV.PPREAD | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD
    | TPMA_NV.NO_DA | TPMA_NV.PLATFORMCREATE
)


@dataclass(frozen=True)
class Identity:
    """The certificates written into a freshly provisioned vTPM."""

    ek_cert: x509.Certificate
    #: None for a VM made without one (``--no-aik-cert``): it must enrol first
    aik_cert: x509.Certificate | None


@dataclass(frozen=True)
class BootPlan:
    """How to boot a vTPM so its PCRs equal a log's replay.

    ``hcrtm_data`` is what goes through the H-CRTM hash sequence; ``skip`` are
    the event indices that sequence stands for; ``extends`` are (pcr, bank ->
    digest) in log order, for the banks the lab vTPM has.
    """

    startup_locality: int
    hcrtm_data: bytes | None
    extends: tuple[tuple[int, Mapping[int, bytes]], ...]
    expected: Mapping[int, Mapping[int, bytes]]


def rsa_public_key(public: TPM2B_PUBLIC) -> rsa.RSAPublicKey:
    """The cryptography RSA key of a TPM RSA public area."""
    key = serialization.load_pem_public_key(public.publicArea.to_pem())
    if not isinstance(key, rsa.RSAPublicKey):
        raise LabError("TPM public area is not an RSA key")
    return key


def allocate_banks(esys: ESAPI) -> None:
    """Keep only SHA-1 and SHA-256 (takes effect at the next _TPM_Init)."""
    sels = []
    for alg in _ALL_BANKS:
        on = int(alg) in LAB_BANKS
        sels.append(
            TPMS_PCR_SELECTION(
                hash=alg, sizeofSelect=3, pcrSelect=b"\xff\xff\xff" if on else b"\0\0\0"
            )
        )
    with tpm_call("PCR_Allocate sha1,sha256"):
        esys.pcr_allocate(TPML_PCR_SELECTION(sels), ESYS_TR.PLATFORM)


def _nv_write_platform(esys: ESAPI, index: int, data: bytes) -> None:
    public = TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=_NV_ATTRS, dataSize=len(data)
        )
    )
    with tpm_call(f"NV_DefineSpace 0x{index:08x} ({len(data)} bytes)"):
        nv = esys.nv_define_space(TPM2B_AUTH(), public, auth_handle=ESYS_TR.PLATFORM)
    chunk = nv_chunk_size(esys)
    with tpm_call(f"NV_Write 0x{index:08x}"):
        for off in range(0, len(data), chunk):
            esys.nv_write(nv, data[off : off + chunk], off, auth_handle=ESYS_TR.PLATFORM)


def _persist_primary(esys: ESAPI, template: TPM2B_PUBLIC, handle: int, what: str) -> TPM2B_PUBLIC:
    with tpm_call(f"CreatePrimary ({what})"):
        obj, public, *_ = esys.create_primary(None, template, ESYS_TR.ENDORSEMENT)
    with flushing(esys, obj), tpm_call(f"EvictControl {what} -> 0x{handle:08x}"):
        esys.evict_control(ESYS_TR.OWNER, obj, handle)
    return public


def provision_identity(
    esys: ESAPI, ca: LabCa, vm_name: str, vm_id: str | None, *,
    ek_ca: LabCa | None = None, aik_cert: bool = True,
) -> Identity:
    """EK + certificate and AIK + certificate, Azure's handles and NV indices.

    ``ek_ca`` issues the EK certificate (the TPM's "manufacturer"; default ``ca``).
    Without ``aik_cert`` only the EK and its certificate are made, as a KVM host's
    ``swtpm_setup --create-ek-cert`` leaves a vTPM: no AIK, no AIK certificate.
    """
    ek_tpl = TPM2B_PUBLIC.parse("rsa2048:aes128cfb", objectAttributes=_EK_ATTRS)
    ek_tpl.publicArea.authPolicy = TPM2B_DIGEST(_EK_POLICY)
    ek_tpl.publicArea.unique.rsa = bytes(256)
    ek_pub = _persist_primary(esys, ek_tpl, EK_HANDLE, "EK")
    ek_cert = (ek_ca or ca).issue_ek_cert(rsa_public_key(ek_pub), vm_name)
    _nv_write_platform(esys, EK_CERT_NV_INDEX, ek_cert.public_bytes(serialization.Encoding.DER))
    if not aik_cert:
        return Identity(ek_cert=ek_cert, aik_cert=None)

    aik_tpl = TPM2B_PUBLIC.parse("rsa2048:rsassa-sha256:null", objectAttributes=_AIK_ATTRS)
    aik_pub = _persist_primary(esys, aik_tpl, AIK_HANDLE, "AIK")
    issued = ca.issue_aik_cert(rsa_public_key(aik_pub), vm_name, vm_id)
    _nv_write_platform(esys, AIK_CERT_NV_INDEX, issued.public_bytes(serialization.Encoding.DER))
    return Identity(ek_cert=ek_cert, aik_cert=issued)


def plan_boot(log: bytes) -> tuple[BootPlan, bytes, tuple[str, ...]]:
    """The boot plan for ``log``, the log the VM keeps, and any adjustment made to it.

    The one adjustment: an H-CRTM event whose digests are not the hash of its
    event data (firmware measures the CRTM image, which the log does not
    carry) cannot be reproduced by the H-CRTM hash sequence; the VM's copy of
    the log then gets the digests of the data it really hashed, and the
    adjustment is recorded with the VM.
    """
    try:
        parsed = parse_log(log)
        replayed = replay_log(parsed)
    except BootwatchError as exc:
        raise LabError(f"the log cannot be replayed, so it cannot boot a lab VM: {exc}") from exc
    events = {e.index: e for e in parsed.events}
    adjusted = bytearray(log)
    notes: list[str] = []
    hcrtm_data: bytes | None = None
    hcrtm_events: set[int] = set()
    if replayed.hcrtm:
        for e in parsed.events:
            if e.event_type == EventType.EV_EFI_HCRTM_EVENT and e.pcr == 0:
                hcrtm_events.add(e.index)
                hcrtm_data = e.data
                for alg, digest in e.digests.items():
                    if alg not in LAB_BANKS:
                        continue
                    want = hashlib.new(LAB_BANKS[alg], e.data).digest()
                    if digest != want:
                        _patch_digest(adjusted, e.offset, digest, want)
                        notes.append(
                            f"event {e.index} EV_EFI_HCRTM_EVENT {LAB_BANKS[alg]} digest "
                            f"{digest.hex()} replaced by the hash of its event data "
                            f"{want.hex()} (the CRTM image it measured is not in the log)"
                        )
                break
        if hcrtm_data is None:
            raise LabError("the log replays with H-CRTM but has no EV_EFI_HCRTM_EVENT in PCR0")
    if notes:
        parsed = parse_log(bytes(adjusted))
        replayed = replay_log(parsed)
    extends: list[tuple[int, Mapping[int, bytes]]] = []
    for x in replayed.extends:
        if x.event_index in hcrtm_events or not 0 <= x.pcr < 24:
            continue
        if events[x.event_index].event_type == EventType.EV_NO_ACTION:
            continue
        digests = {a: d for a, d in x.digests.items() if a in LAB_BANKS}
        if digests:
            extends.append((x.pcr, digests))
    expected = {a: dict(replayed.pcrs.get(a, {})) for a in LAB_BANKS}
    plan = BootPlan(
        startup_locality=replayed.startup_locality or 0,
        hcrtm_data=hcrtm_data,
        extends=tuple(extends),
        expected=expected,
    )
    return plan, bytes(adjusted), tuple(notes)


def _patch_digest(buf: bytearray, start: int, old: bytes, new: bytes) -> None:
    at = buf.find(old, start)
    if at < 0 or at > start + 64 + 8 * 70:
        raise LabError(f"cannot locate the H-CRTM digest {old.hex()} near byte offset {start}")
    buf[at : at + len(old)] = new


def boot(swtpm: SwtpmProcess, plan: BootPlan) -> None:
    """Reset the vTPM and measure the plan into it, as firmware would."""
    swtpm.init()
    if plan.hcrtm_data is not None:
        swtpm.hash_crtm(plan.hcrtm_data)
        swtpm.startup_clear()
    elif plan.startup_locality:
        swtpm.set_locality(plan.startup_locality)
        try:
            swtpm.startup_clear()
        finally:
            swtpm.set_locality(0)
    else:
        swtpm.startup_clear()
    with open_tpm(swtpm.tcti) as esys, tpm_call("PCR_Extend (log replay)"):
        for pcr, digests in plan.extends:
            esys.pcr_extend(ESYS_TR(pcr), digest_values(digests))
