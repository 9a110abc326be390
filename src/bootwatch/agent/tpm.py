"""Thin tpm2-pytss (ESAPI) helpers shared by the collector, the unsealer and the lab.

Why a helper module: every TPM error must reach the caller as a
:class:`~bootwatch.errors.TpmDeviceError` naming the command, and every
transient object or session must be flushed, because a TPM without a resource
manager (swtpm, a raw ``/dev/tpm0``) has only three object slots and keeps
them across connections.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_PT_NV,
    TPM2_RC,
    TPM2_SE,
    TPMA_OBJECT,
)
from tpm2_pytss.types import (
    TPM2B_DIGEST,
    TPM2B_PUBLIC,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_CONTEXT,
    TPMS_PCR_SELECTION,
    TPMT_HA,
    TPMT_SYM_DEF,
    TPMU_HA,
)

from bootwatch.errors import TpmDeviceError

__all__ = [
    "AIK_CERT_NV_INDEX",
    "AIK_HANDLE",
    "ATTESTED_PCRS",
    "DEFAULT_TCTI",
    "EK_CERT_NV_INDEX",
    "EK_HANDLE",
    "EPHEMERAL_KEY_ATTRIBUTES",
    "NV_CHUNK_DEFAULT",
    "NV_READ_LIMIT",
    "TpmPolicyError",
    "create_ephemeral_key",
    "digest_values",
    "ephemeral_key_template",
    "flushing",
    "hash_name",
    "nv_chunk_size",
    "nv_read_all",
    "open_tpm",
    "pcr_composite_digest",
    "pcr_policy_digest",
    "pcr_selection",
    "persistent",
    "rc_of",
    "read_pcrs",
    "start_pcr_policy_session",
    "tpm_call",
]

#: Persistent handle of the AIK on Azure vTPMs (and lab VMs).
AIK_HANDLE = 0x81000003
#: NV index of the AIK certificate (DER) on Azure vTPMs (and lab VMs).
AIK_CERT_NV_INDEX = 0x01C101D0
#: Persistent handle of the RSA EK (TCG provisioning guidance).
EK_HANDLE = 0x81010001
#: NV index of the RSA EK certificate (TCG provisioning guidance).
EK_CERT_NV_INDEX = 0x01C00002
#: PCRs a Linux Trusted Launch guest quotes (maa-protocol 1.3).
ATTESTED_PCRS: tuple[int, ...] = tuple(range(8))
#: The TCTI used when none is given: the kernel resource manager.
DEFAULT_TCTI = "device:/dev/tpmrm0"
#: Largest NV read/write chunk when the TPM does not say (TPM2_PT_NV_BUFFER_MAX on swtpm).
NV_CHUNK_DEFAULT = 1024
#: Upper bound on an NV index we read (NV_INDEX_MAX on swtpm is 2048).
NV_READ_LIMIT = 4096

#: Attributes of the ephemeral (token-unwrapping) key, exactly as the Azure guest client sets.
EPHEMERAL_KEY_ATTRIBUTES = (
    TPMA_OBJECT.DECRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.NODA
)

_ALG_BY_NAME = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384,
                "sha512": TPM2_ALG.SHA512}
_HASH_BY_ALG = {int(TPM2_ALG.SHA1): "sha1", int(TPM2_ALG.SHA256): "sha256",
                int(TPM2_ALG.SHA384): "sha384", int(TPM2_ALG.SHA512): "sha512"}
#: TPM2_CC_PolicyPCR, for the software half of a policy digest.
_CC_POLICY_PCR = 0x0000017F


class TpmPolicyError(TpmDeviceError):
    """The TPM refused a policy session: the object's policy is not satisfied."""

    code = "tpm_policy_failed"


def hash_name(alg_id: int) -> str:
    """The hashlib name of a TPM hash algorithm id (raises TpmDeviceError if unknown)."""
    try:
        return _HASH_BY_ALG[alg_id]
    except KeyError:
        raise TpmDeviceError(f"hash algorithm 0x{alg_id:04x} is not supported") from None


def rc_of(exc: TSS2_Exception) -> int:
    """The TPM response code of a tpm2-pytss exception, format-one details stripped."""
    rc = int(exc.rc)
    # format-one codes carry a parameter/handle/session number in bits 8-11
    return rc & ~0xF00 if rc & 0x80 else rc


@contextmanager
def tpm_call(what: str) -> Iterator[None]:
    """Translate a tpm2-pytss error inside the block into TpmDeviceError naming ``what``."""
    try:
        yield
    except TSS2_Exception as exc:
        rc = rc_of(exc)
        if rc in (TPM2_RC.POLICY_FAIL, TPM2_RC.POLICY, TPM2_RC.PCR_CHANGED):
            raise TpmPolicyError(f"{what}: TPM refused the policy session ({exc})") from exc
        raise TpmDeviceError(f"{what}: {exc}") from exc


@contextmanager
def open_tpm(tcti: str | None = None) -> Iterator[ESAPI]:
    """An ESAPI context on ``tcti`` (a tpm2-tools style string), always closed."""
    spec = tcti or DEFAULT_TCTI
    # the TSS logs every TPM error to stderr; ours are raised as typed errors instead
    os.environ.setdefault("TSS2_LOG", "all+none")
    try:
        esys = ESAPI(spec)
    except TSS2_Exception as exc:
        raise TpmDeviceError(f"cannot open the TPM through TCTI {spec!r}: {exc}") from exc
    try:
        yield esys
    finally:
        esys.close()


@contextmanager
def flushing(esys: ESAPI, handle: ESYS_TR) -> Iterator[ESYS_TR]:
    """Yield ``handle`` and flush it afterwards (transient objects and sessions)."""
    try:
        yield handle
    finally:
        # already gone (a failed policy session may be flushed by the TPM): nothing to leak
        with suppress(TSS2_Exception):
            esys.flush_context(handle)


def digest_values(digests: Mapping[int, bytes]) -> TPML_DIGEST_VALUES:
    """TPML_DIGEST_VALUES for TPM2_PCR_Extend from alg id -> digest."""
    items = []
    for alg, digest in sorted(digests.items()):
        union = TPMU_HA(**{hash_name(alg): digest})
        items.append(TPMT_HA(hashAlg=TPM2_ALG(alg), digest=union))
    return TPML_DIGEST_VALUES(items)


def pcr_selection(indices: Sequence[int], alg: str = "sha256") -> TPML_PCR_SELECTION:
    """A single-bank TPML_PCR_SELECTION for ``indices``."""
    bitmap = bytearray(3)
    for i in indices:
        if not 0 <= i < 24:
            raise TpmDeviceError(f"PCR index {i} is outside 0..23")
        bitmap[i // 8] |= 1 << (i % 8)
    sel = TPMS_PCR_SELECTION(hash=_ALG_BY_NAME[alg], sizeofSelect=3, pcrSelect=bytes(bitmap))
    return TPML_PCR_SELECTION([sel])


def read_pcrs(esys: ESAPI, indices: Sequence[int], alg: str = "sha256") -> dict[int, bytes]:
    """Read PCRs of one bank; TPM2_PCR_Read returns at most 8 per call, so loop."""
    out: dict[int, bytes] = {}
    wanted = sorted(set(indices))
    with tpm_call(f"PCR_Read {alg}"):
        while len(out) < len(wanted):
            todo = [i for i in wanted if i not in out]
            _, sel, values = esys.pcr_read(pcr_selection(todo, alg))
            got = _selected(sel)
            if not got:
                raise TpmDeviceError(f"PCR_Read {alg}: the TPM has no {alg} bank")
            before = len(out)
            for i, digest in zip(got, values.digests, strict=False):
                if i in todo:
                    out[i] = bytes(digest)
            if len(out) == before:  # never loop on a TPM that keeps answering the same
                raise TpmDeviceError(f"PCR_Read {alg}: the TPM did not return PCRs {todo}")
    return out


def _selected(sel: TPML_PCR_SELECTION) -> list[int]:
    idx: list[int] = []
    for n in range(sel.count):
        s = sel.pcrSelections[n]
        bitmap = bytes(s.pcrSelect)[: s.sizeofSelect]
        idx.extend(b * 8 + bit for b, byte in enumerate(bitmap) for bit in range(8)
                   if byte & (1 << bit))
    return idx


#: TPM_CC_PolicyPCR, big-endian as it enters the policy digest
_TPM_CC_POLICY_PCR = (0x0000017F).to_bytes(4, "big")


def pcr_composite_digest(values: Mapping[int, bytes], indices: Sequence[int]) -> bytes:
    """SHA-256 of the concatenated PCR values in index order (TPM2_PolicyPCR's pcrDigest)."""
    h = hashlib.sha256()
    for i in sorted(indices):
        h.update(values[i])
    return h.digest()


def pcr_policy_digest(
    esys: ESAPI, indices: Sequence[int], values: Mapping[int, bytes] | None = None
) -> bytes:
    """TPM2_PolicyPCR digest over ``indices`` (SHA-256 bank).

    With ``values`` the digest is over those values, computed here as the TPM computes
    it (TPM 2.0 Part 3, PolicyPCR: SHA-256 of the zero starting digest,
    TPM_CC_PolicyPCR, the marshalled PCR selection and the pcrDigest), which saves a
    trial session's four commands per attestation; tests/agent checks it against the
    TPM's own trial session.  Without, a trial session over the TPM's current values.
    """
    if values is not None:
        return hashlib.sha256(
            bytes(32) + _TPM_CC_POLICY_PCR + pcr_selection(indices).marshal()
            + pcr_composite_digest(values, indices)
        ).digest()
    with tpm_call("trial PolicyPCR"):
        session = esys.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256,
        )
        with flushing(esys, session):
            esys.policy_pcr(session, TPM2B_DIGEST(b""), pcr_selection(indices))
            return bytes(esys.policy_get_digest(session))


def ephemeral_key_template(policy_digest: bytes) -> TPM2B_PUBLIC:
    """RSA-2048 decrypt key, scheme NULL, nameAlg SHA-256, authPolicy = the PCR policy.

    Attributes are Azure's: decrypt|fixedTPM|fixedParent|sensitiveDataOrigin|noDA
    (no userWithAuth: only the policy session can use it).
    """
    tpl = TPM2B_PUBLIC.parse("rsa2048:null:null", objectAttributes=EPHEMERAL_KEY_ATTRIBUTES)
    tpl.publicArea.authPolicy = TPM2B_DIGEST(policy_digest)
    return tpl


def create_ephemeral_key(
    esys: ESAPI, indices: Sequence[int], values: Mapping[int, bytes] | None = None,
    *, cache: Path | None = None,
) -> tuple[ESYS_TR, TPM2B_PUBLIC]:
    """CreatePrimary of the ephemeral key under the NULL hierarchy; caller flushes it.

    Deterministic for one null seed (one boot) and one policy digest: calling it
    again with the same PCR values yields the same key, which is how the
    unsealer finds the key the request certified.

    ``cache``: a file holding the TPM's saved context of that same key.  Deriving
    an RSA key is the slowest command of an attestation, so a daemon that attests
    every hour in the same boot loads the saved context instead (TPM2_ContextLoad:
    the TPM decrypts and integrity-checks its own blob, and refuses a blob of a
    NULL-hierarchy object once the TPM was reset).  The loaded key is used only
    when its public area is exactly the template for this policy; anything else
    (no file, another boot, PCRs that moved, a damaged file) falls back to
    CreatePrimary, whose context then replaces the file.
    """
    policy = pcr_policy_digest(esys, indices, values)
    template = ephemeral_key_template(policy)
    if cache is not None:
        cached = _load_cached_key(esys, cache, template)
        if cached is not None:
            return cached
    with tpm_call("CreatePrimary (ephemeral key, NULL hierarchy)"):
        handle, public, *_ = esys.create_primary(None, template, ESYS_TR.NULL)
    if cache is not None:
        _save_key_context(esys, handle, cache)
    return handle, public


#: a saved TPM context is a few KB; refuse anything larger
_MAX_CONTEXT_BYTES = 16 * 1024


def _load_cached_key(esys: ESAPI, cache: Path,
                     template: TPM2B_PUBLIC) -> tuple[ESYS_TR, TPM2B_PUBLIC] | None:
    try:
        with cache.open("rb") as fh:
            blob = fh.read(_MAX_CONTEXT_BYTES + 1)
    except OSError:
        return None
    if not blob or len(blob) > _MAX_CONTEXT_BYTES:
        return None
    try:
        context, used = TPMS_CONTEXT.unmarshal(blob)
        if used != len(blob):
            return None
        handle = esys.context_load(context)
    except (TSS2_Exception, ValueError, TypeError):
        return None  # another boot, another TPM, a damaged file: derive the key again
    try:
        public, _, _ = esys.read_public(handle)
        # the template and the key differ only in `unique` (the modulus the TPM derived)
        shape, _ = TPM2B_PUBLIC.unmarshal(public.marshal())
        shape.publicArea.unique.rsa = template.publicArea.unique.rsa
        if shape.marshal() != template.marshal():
            raise ValueError("not the key for this policy")
    except (TSS2_Exception, ValueError):
        with suppress(TSS2_Exception):
            esys.flush_context(handle)
        return None
    return handle, public


def _save_key_context(esys: ESAPI, handle: ESYS_TR, cache: Path) -> None:
    """Best effort: a cache that cannot be written only costs the next cycle time."""
    try:
        blob = esys.context_save(handle).marshal()
    except TSS2_Exception:
        return
    tmp = cache.with_name(cache.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, cache)
    except OSError:
        with suppress(OSError):
            tmp.unlink()


def start_pcr_policy_session(esys: ESAPI, indices: Sequence[int]) -> ESYS_TR:
    """A policy session satisfied by the TPM's *current* PCR values; caller flushes it."""
    with tpm_call("PolicyPCR session"):
        session = esys.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256,
        )
        try:
            esys.policy_pcr(session, TPM2B_DIGEST(b""), pcr_selection(indices))
        except TSS2_Exception:
            esys.flush_context(session)
            raise
    return session


def persistent(esys: ESAPI, handle: int) -> ESYS_TR:
    """The ESYS_TR of a persistent object or NV index (raises if absent)."""
    with tpm_call(f"TR_FromTPMPublic 0x{handle:08x}"):
        return esys.tr_from_tpmpublic(handle)


def nv_chunk_size(esys: ESAPI) -> int:
    """TPM2_PT_NV_BUFFER_MAX, the largest NV read/write the TPM accepts."""
    try:
        _, data = esys.get_capability(TPM2_CAP.TPM_PROPERTIES, int(TPM2_PT_NV.BUFFER_MAX), 1)
        for prop in data.data.tpmProperties:
            if prop.property == TPM2_PT_NV.BUFFER_MAX and prop.value:
                return int(prop.value)
    except TSS2_Exception:
        pass
    return NV_CHUNK_DEFAULT


def nv_read_all(esys: ESAPI, index: int) -> bytes:
    """The whole content of NV ``index``, read in chunks with the index's own (empty) auth."""
    nv = persistent(esys, index)
    with tpm_call(f"NV_ReadPublic 0x{index:08x}"):
        nv_public, _ = esys.nv_read_public(nv)
    size = int(nv_public.nvPublic.dataSize)
    if size > NV_READ_LIMIT:
        raise TpmDeviceError(f"NV index 0x{index:08x} holds {size} bytes, limit {NV_READ_LIMIT}")
    chunk = nv_chunk_size(esys)
    out = bytearray()
    with tpm_call(f"NV_Read 0x{index:08x}"):
        while len(out) < size:
            n = min(chunk, size - len(out))
            out += bytes(esys.nv_read(nv, n, len(out), auth_handle=nv))
    return bytes(out)
