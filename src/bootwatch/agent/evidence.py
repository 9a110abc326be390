"""The evidence collector: an AzureGuest ``AttestationInfo`` (protocol 2.0) from a TPM.

What goes in, exactly as the Azure guest clients send it (maa-protocol 1.3):
OS fields, the TCG log, ClientPayload, and TpmInfo: the AIK certificate (NV
``0x01C101D0``), the AIK public area (``0x81000003``), a quote of PCRs 0-7
(SHA-256) with *empty* qualifying data as raw TPMS_ATTEST + raw RSASSA bytes,
the ephemeral RSA-2048 key created under the NULL hierarchy with authPolicy =
PolicyPCR over the quoted PCR values, its TPM2_Certify by the AIK, and the PCR
values.  Every transient object and session is flushed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
from tpm2_pytss.types import TPM2B_DATA, TPMT_SIG_SCHEME, TPMT_SIGNATURE

from bootwatch.agent.tpm import (
    AIK_CERT_NV_INDEX,
    AIK_HANDLE,
    ATTESTED_PCRS,
    create_ephemeral_key,
    flushing,
    nv_read_all,
    open_tpm,
    pcr_selection,
    persistent,
    read_pcrs,
    tpm_call,
)
from bootwatch.errors import EventLogError, InputError, TpmDeviceError
from bootwatch.eventlog.framing import parse_log
from bootwatch.eventlog.model import EventType
from bootwatch.protocol.azureguest import (
    ISOLATION_TRUSTED_LAUNCH,
    MAX_TCG_LOG_BYTES,
    OSBUILD_LINUX_LITERAL,
    PROTOCOL_VERSION,
    AzureGuestRequest,
    TpmInfo,
    encode_request,
)

__all__ = [
    "LINUX_OS_BUILD",
    "SECURITYFS_LOG",
    "WINDOWS_OS_BUILD",
    "CollectedEvidence",
    "OsInfo",
    "collect_evidence",
    "collect_from",
    "collect_keeping_key",
    "default_pcr_selection",
    "read_os_info",
    "read_tcg_log",
]

#: Where Linux exposes the firmware's TCG event log.
SECURITYFS_LOG = Path("/sys/kernel/security/tpm0/binary_bios_measurements")
#: OSBuild value Linux clients send (sic: the Azure Linux client's literal).
LINUX_OS_BUILD = OSBUILD_LINUX_LITERAL
#: OSBuild value of a Windows guest in the lab (Windows agents send no Linux literal)
WINDOWS_OS_BUILD = "NotApplicable"
_QUOTE_RETRIES = 3


@dataclass(frozen=True)
class OsInfo:
    """The OS fields of AttestationInfo (sent base64-encoded, versions as integers)."""

    os_type: str = "Linux"
    distro: str = "Linux"
    version_major: int = 0
    version_minor: int = 0
    build: str = LINUX_OS_BUILD


def read_os_info(path: Path = Path("/etc/os-release")) -> OsInfo:
    """OS fields from os-release: NAME, and VERSION_ID split into major/minor integers.

    ``ID=windows`` (what the lab writes for a Windows image's VM) reports ostype
    Windows with OSBuild ``NotApplicable``, as a Windows guest's agent does.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return OsInfo()
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, val = line.partition("=")
        if sep and key.strip():
            values[key.strip()] = val.strip().strip('"').strip("'")
    parts = values.get("VERSION_ID", "").split(".")
    nums = [int(p) if p.isdigit() else 0 for p in parts[:2]] + [0, 0]
    distro = values.get("NAME", "Linux") or "Linux"
    if values.get("ID", "").lower() == "windows":
        return OsInfo("Windows", distro, nums[0], nums[1], WINDOWS_OS_BUILD)
    return OsInfo(distro=distro, version_major=nums[0], version_minor=nums[1])


def read_tcg_log(path: Path = SECURITYFS_LOG) -> bytes:
    """The raw TCG log at ``path`` (securityfs by default), size-limited."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_TCG_LOG_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read the TCG event log {path}: {exc.strerror}") from exc
    if len(data) > MAX_TCG_LOG_BYTES:
        raise InputError(f"TCG event log {path} is over {MAX_TCG_LOG_BYTES} bytes")
    return data


@dataclass(frozen=True)
class CollectedEvidence:
    """Everything one attestation sends, as raw bytes (not yet trusted by anyone).

    ``pcrs`` are the SHA-256 values the quote covers; keep them: the unsealer
    recreates the ephemeral key from them and says which PCR changed.
    """

    os: OsInfo
    tcg_log: bytes
    aik_cert: bytes
    aik_pub: bytes
    pcr_quote: bytes
    pcr_signature: bytes
    enc_key_pub: bytes
    enc_key_certify_info: bytes
    enc_key_certify_signature: bytes
    pcrs: Mapping[int, bytes]
    client_payload: Mapping[str, str] = field(default_factory=dict)

    @property
    def pcr_set(self) -> tuple[int, ...]:
        return tuple(sorted(self.pcrs))

    def request(self) -> AzureGuestRequest:
        """The typed AzureGuest request (protocol 2.0, IsolationInfo TrustedLaunch)."""
        return AzureGuestRequest(
            protocol_version=PROTOCOL_VERSION,
            os_type=self.os.os_type,
            os_distro=self.os.distro,
            os_version_major=self.os.version_major,
            os_version_minor=self.os.version_minor,
            os_build=self.os.build,
            tcg_logs=self.tcg_log,
            client_payload=dict(self.client_payload),
            tpm_info=TpmInfo(
                aik_cert=self.aik_cert,
                aik_pub=self.aik_pub,
                pcr_quote=self.pcr_quote,
                pcr_signature=self.pcr_signature,
                enc_key_pub=self.enc_key_pub,
                enc_key_certify_info=self.enc_key_certify_info,
                enc_key_certify_info_signature=self.enc_key_certify_signature,
                pcr_set=self.pcr_set,
                pcrs=tuple((i, self.pcrs[i]) for i in self.pcr_set),
            ),
            isolation_type=ISOLATION_TRUSTED_LAUNCH,
        )

    def request_body(self) -> bytes:
        """The HTTP body of ``POST /attest/AzureGuest``: ``{"AttestationInfo": b64url(JSON)}``."""
        return encode_request(self.request())


def _rsa_signature_bytes(sig: TPMT_SIGNATURE, what: str) -> bytes:
    """The raw RSA signature AzureGuest carries (not a marshalled TPMT_SIGNATURE)."""
    if sig.sigAlg == TPM2_ALG.RSASSA:
        return bytes(sig.signature.rsassa.sig)
    if sig.sigAlg == TPM2_ALG.RSAPSS:
        return bytes(sig.signature.rsapss.sig)
    raise TpmDeviceError(
        f"{what}: the AIK signed with algorithm {sig.sigAlg}; AzureGuest carries raw RSA "
        "signatures only (the AIK must be an RSA signing key)"
    )


def default_pcr_selection(tcg_log: bytes) -> tuple[int, ...]:
    """PCRs 0-7 (what Microsoft's Linux client quotes) plus every PCR among 8-15 the
    log extends (bootloader, kernel, command line, shim's PCR 14), so late-boot
    changes are attested too.  A log that cannot be framed gives 0-7: the service
    will say what is wrong with it."""
    try:
        log = parse_log(tcg_log)
    except EventLogError:
        return ATTESTED_PCRS
    late = {
        ev.pcr for ev in log.events
        if 8 <= ev.pcr <= 15 and ev.event_type != EventType.EV_NO_ACTION
    }
    return tuple(sorted(set(ATTESTED_PCRS) | late))


def collect_from(
    esys: ESAPI,
    *,
    tcg_log: bytes,
    os_info: OsInfo | None = None,
    client_payload: Mapping[str, str] | None = None,
    pcr_indices: Sequence[int] | None = None,
) -> CollectedEvidence:
    """Collect on an open ESAPI context (see :func:`collect_evidence`).

    ``pcr_indices`` None: :func:`default_pcr_selection` of the log."""
    ev, handle = collect_keeping_key(esys, tcg_log=tcg_log, os_info=os_info,
                                     client_payload=client_payload, pcr_indices=pcr_indices)
    with flushing(esys, handle):
        return ev


def collect_keeping_key(
    esys: ESAPI,
    *,
    tcg_log: bytes,
    os_info: OsInfo | None = None,
    client_payload: Mapping[str, str] | None = None,
    pcr_indices: Sequence[int] | None = None,
    key_cache: Path | None = None,
) -> tuple[CollectedEvidence, ESYS_TR]:
    """:func:`collect_from`, leaving the certified ephemeral key loaded; the caller
    flushes it.

    For an attestation that unseals its answer in the same session
    (:func:`bootwatch.agent.unseal.open_envelope` with ``key_handle``): the vTPM
    then derives the RSA key once per attestation instead of twice (CreatePrimary
    under the NULL hierarchy is the slowest command of a cycle).  ``key_cache``:
    a file with the key's saved context, reused while it is the same key (see
    :func:`bootwatch.agent.tpm.create_ephemeral_key`).
    """
    if pcr_indices is None:
        pcr_indices = default_pcr_selection(tcg_log)
    indices = tuple(sorted(set(pcr_indices)))
    try:
        aik_cert = nv_read_all(esys, AIK_CERT_NV_INDEX)
    except TpmDeviceError as exc:
        raise TpmDeviceError(
            f"no AIK certificate in NV 0x{AIK_CERT_NV_INDEX:08x} ({exc}); a TPM with only an "
            "EK certificate must enrol first: bootwatch agent enroll --url PROVIDER_URL"
        ) from exc
    aik = persistent(esys, AIK_HANDLE)
    with tpm_call("ReadPublic AIK 0x81000003"):
        aik_public, _, _ = esys.read_public(aik)
    null_scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
    # PCRs can move between the read and the quote (an OS measuring); retry until stable
    for _ in range(_QUOTE_RETRIES):
        before = read_pcrs(esys, indices)
        with tpm_call("Quote PCRs (AIK)"):
            quoted, quote_sig = esys.quote(aik, pcr_selection(indices), TPM2B_DATA(), null_scheme)
        if read_pcrs(esys, indices) == before:
            break
    else:
        raise TpmDeviceError(f"PCRs {list(indices)} kept changing during the quote")
    handle, enc_pub = create_ephemeral_key(esys, indices, before, cache=key_cache)
    try:
        with tpm_call("Certify ephemeral key (AIK)"):
            certify_info, certify_sig = esys.certify(handle, aik, TPM2B_DATA(), null_scheme)
        ev = CollectedEvidence(
            os=os_info or OsInfo(),
            tcg_log=tcg_log,
            aik_cert=aik_cert,
            aik_pub=aik_public.marshal(),
            pcr_quote=bytes(quoted),
            pcr_signature=_rsa_signature_bytes(quote_sig, "Quote"),
            enc_key_pub=enc_pub.marshal(),
            enc_key_certify_info=bytes(certify_info),
            enc_key_certify_signature=_rsa_signature_bytes(certify_sig, "Certify"),
            pcrs=before,
            client_payload=dict(client_payload or {}),
        )
    except BaseException:
        with flushing(esys, handle):
            raise
    return ev, handle


def collect_evidence(
    tcti: str | None,
    *,
    tcg_log: bytes,
    os_info: OsInfo | None = None,
    client_payload: Mapping[str, str] | None = None,
    pcr_indices: Sequence[int] | None = None,
) -> CollectedEvidence:
    """Open ``tcti`` (None: ``/dev/tpmrm0``) and collect one AzureGuest attestation."""
    with open_tpm(tcti) as esys:
        return collect_from(
            esys, tcg_log=tcg_log, os_info=os_info, client_payload=client_payload,
            pcr_indices=pcr_indices,
        )
