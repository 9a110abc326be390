"""TPMS_ATTEST: what the TPM signs in TPM2_Quote and TPM2_Certify.

AzureGuest carries the raw TPMS_ATTEST bytes (the TPM2B_ATTEST contents
without the size prefix).  Only quote and certify bodies are read; any
other attestation type is refused with a typed error, since bootwatch has
no use for it and must not guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from bootwatch.tpm.constants import DIGEST_SIZES, TpmSt
from bootwatch.tpm.marshal import Reader, tpm2b, u16, u32, u64
from bootwatch.tpm.pcr import PcrSelection, marshal_pcr_selections, read_pcr_selections

__all__ = [
    "MAX_ATTEST_BYTES",
    "CertifyInfo",
    "ClockInfo",
    "QuoteInfo",
    "TpmsAttest",
    "marshal_tpms_attest",
    "parse_tpms_attest",
]

#: A TPMS_ATTEST larger than this is refused (real ones are ~100-200 bytes).
MAX_ATTEST_BYTES = 2048
_MAX_NAME = 2 + 64
_MAX_DATA = 64  # TPM2B_DATA: sizeof(TPMT_HA)


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO: the TPM's clock and how often it was reset or restarted."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO: the selected PCRs and the digest of their values."""

    pcr_selections: tuple[PcrSelection, ...]
    pcr_digest: bytes


@dataclass(frozen=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO: the name and qualified name of the certified object."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True)
class TpmsAttest:
    """A parsed TPMS_ATTEST; its signature is checked separately (see signature.py)."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    attested: QuoteInfo | CertifyInfo
    raw: bytes

    @property
    def quote(self) -> QuoteInfo | None:
        """The quote body, if this is a quote."""
        return self.attested if isinstance(self.attested, QuoteInfo) else None

    @property
    def certify(self) -> CertifyInfo | None:
        """The certify body, if this is a certify."""
        return self.attested if isinstance(self.attested, CertifyInfo) else None


def parse_tpms_attest(data: bytes) -> TpmsAttest:
    """Parse raw TPMS_ATTEST bytes (quote or certify); the whole buffer must be used.

    The magic is read but not judged here: a wrong magic is an evidence
    failure (``quote_structure``), not a framing error.
    """
    r = Reader(data, "TPMS_ATTEST")
    if len(data) > MAX_ATTEST_BYTES:
        raise r.error("(whole)", f"{len(data)} bytes exceeds the maximum {MAX_ATTEST_BYTES}")
    magic = r.u32("magic")
    type_off = r.offset
    st = r.u16("type")
    signer = r.tpm2b("qualifiedSigner", _MAX_NAME)
    extra = r.tpm2b("extraData", _MAX_DATA)
    clock = r.u64("clockInfo.clock")
    reset = r.u32("clockInfo.resetCount")
    restart = r.u32("clockInfo.restartCount")
    safe_off = r.offset
    safe = r.u8("clockInfo.safe")
    if safe > 1:
        raise r.error("clockInfo.safe", f"TPMI_YES_NO value {safe}", offset=safe_off)
    fw = r.u64("firmwareVersion")
    attested: QuoteInfo | CertifyInfo
    if st == TpmSt.ATTEST_QUOTE:
        sels = read_pcr_selections(r, "attested.quote.pcrSelect")
        d_off = r.offset
        pcr_digest = r.tpm2b("attested.quote.pcrDigest", 64)
        if len(pcr_digest) not in set(DIGEST_SIZES.values()):
            raise r.error("attested.quote.pcrDigest", f"{len(pcr_digest)} bytes is no digest size",
                          offset=d_off)
        attested = QuoteInfo(sels, pcr_digest)
    elif st == TpmSt.ATTEST_CERTIFY:
        attested = CertifyInfo(r.tpm2b("attested.certify.name", _MAX_NAME),
                               r.tpm2b("attested.certify.qualifiedName", _MAX_NAME))
    else:
        raise r.error("type", f"attestation type 0x{st:04x} is neither a quote (0x8018) nor a "
                      "certify (0x8017)", offset=type_off)
    r.expect_end()
    return TpmsAttest(magic, st, signer, extra, ClockInfo(clock, reset, restart, bool(safe)), fw,
                      attested, bytes(data))


def marshal_tpms_attest(
    *,
    magic: int,
    attest_type: int,
    qualified_signer: bytes,
    extra_data: bytes,
    clock_info: ClockInfo,
    firmware_version: int,
    attested: QuoteInfo | CertifyInfo,
) -> bytes:
    """Marshal a TPMS_ATTEST (for building test evidence; a TPM signs its own)."""
    out = u32(magic) + u16(attest_type) + tpm2b(qualified_signer) + tpm2b(extra_data)
    out += u64(clock_info.clock) + u32(clock_info.reset_count) + u32(clock_info.restart_count)
    out += bytes([1 if clock_info.safe else 0]) + u64(firmware_version)
    if isinstance(attested, QuoteInfo):
        out += marshal_pcr_selections(attested.pcr_selections) + tpm2b(attested.pcr_digest)
    else:
        out += tpm2b(attested.name) + tpm2b(attested.qualified_name)
    return out
