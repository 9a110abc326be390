"""PCR selections and the two digests computed over PCR values.

* the quote's ``pcrDigest``: H_sign(PCR values concatenated in selection order);
* the TPM2_PolicyPCR policy digest: what a key's ``authPolicy`` is when it
  may be used only while the given PCRs hold the given values.

Selection order is bank by bank as listed in TPML_PCR_SELECTION, and within a
bank by ascending PCR index, as the TPM itself orders them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bootwatch.tpm.constants import (
    DIGEST_SIZES,
    MAX_PCR_INDEX,
    TPM_CC_POLICY_PCR,
    alg_name,
    digest,
)
from bootwatch.tpm.errors import TpmValueError
from bootwatch.tpm.marshal import Reader, u16, u32

__all__ = [
    "MAX_BANKS",
    "MAX_SIZEOF_SELECT",
    "PcrSelection",
    "marshal_pcr_selections",
    "parse_pcr_selections",
    "policy_pcr_digest",
    "quote_pcr_digest",
    "read_pcr_selections",
    "values_in_selection_order",
]

#: TPML_PCR_SELECTION may list at most this many banks (TPM implementations use <= 16).
MAX_BANKS = 16
#: sizeofSelect at most this (4 bytes = 32 PCRs).
MAX_SIZEOF_SELECT = 4


@dataclass(frozen=True)
class PcrSelection:
    """TPMS_PCR_SELECTION: one bank and the PCRs selected in it (ascending)."""

    hash_alg: int
    pcrs: tuple[int, ...]
    size_of_select: int = 3

    def marshal(self) -> bytes:
        """TPMS_PCR_SELECTION bytes: hash, sizeofSelect, bitmap.

        TpmValueError when a PCR does not fit the bitmap or sizeofSelect is out of range.
        """
        if not 0 <= self.size_of_select <= MAX_SIZEOF_SELECT:
            raise TpmValueError(f"sizeofSelect {self.size_of_select} is outside 0..."
                                f"{MAX_SIZEOF_SELECT}")
        bitmap = bytearray(self.size_of_select)
        for p in self.pcrs:
            if not 0 <= p < 8 * self.size_of_select:
                raise TpmValueError(f"PCR {p} does not fit a {self.size_of_select}-byte "
                                    "selection bitmap")
            bitmap[p // 8] |= 1 << (p % 8)
        return u16(self.hash_alg) + bytes([self.size_of_select]) + bytes(bitmap)


def marshal_pcr_selections(selections: Iterable[PcrSelection]) -> bytes:
    """TPML_PCR_SELECTION bytes."""
    sels = list(selections)
    return u32(len(sels)) + b"".join(s.marshal() for s in sels)


def read_pcr_selections(r: Reader, field: str) -> tuple[PcrSelection, ...]:
    """Read a TPML_PCR_SELECTION at ``field``."""
    count_off = r.offset
    count = r.u32(f"{field}.count")
    if count > MAX_BANKS:
        raise r.error(f"{field}.count", f"{count} banks exceeds the maximum {MAX_BANKS}",
                      offset=count_off)
    out: list[PcrSelection] = []
    for i in range(count):
        f = f"{field}.pcrSelections[{i}]"
        alg_off = r.offset
        alg = r.u16(f"{f}.hash")
        if alg not in DIGEST_SIZES:
            raise r.error(f"{f}.hash", f"{alg_name(alg)} is not a supported PCR bank",
                          offset=alg_off)
        size_off = r.offset
        size = r.u8(f"{f}.sizeofSelect")
        if size > MAX_SIZEOF_SELECT:
            raise r.error(f"{f}.sizeofSelect", f"{size} exceeds {MAX_SIZEOF_SELECT}",
                          offset=size_off)
        bitmap = r.take(size, f"{f}.pcrSelect")
        pcrs = tuple(b * 8 + bit for b in range(size) for bit in range(8)
                     if bitmap[b] & (1 << bit))
        if pcrs and pcrs[-1] > MAX_PCR_INDEX:
            raise r.error(f"{f}.pcrSelect", f"PCR {pcrs[-1]} is beyond PCR {MAX_PCR_INDEX}",
                          offset=size_off + 1)
        out.append(PcrSelection(alg, pcrs, size))
    return tuple(out)


def parse_pcr_selections(data: bytes) -> tuple[PcrSelection, ...]:
    """Parse a whole TPML_PCR_SELECTION buffer."""
    r = Reader(data, "TPML_PCR_SELECTION")
    sels = read_pcr_selections(r, "pcrSelections")
    r.expect_end()
    return sels


def values_in_selection_order(
    selections: Iterable[PcrSelection], values: Mapping[int, Mapping[int, bytes]]
) -> list[bytes]:
    """PCR values ordered as the TPM concatenates them; ``values[alg][pcr]``.

    Raises TpmValueError naming the bank and PCR when a value is missing, when a
    value has the wrong size for its bank, or when the bank is not a hash bootwatch
    knows.
    """
    out: list[bytes] = []
    for sel in selections:
        if sel.hash_alg not in DIGEST_SIZES:
            raise TpmValueError(f"{alg_name(sel.hash_alg)} is not a supported PCR bank")
        bank = values.get(sel.hash_alg)
        for p in sel.pcrs:
            if bank is None or p not in bank:
                raise TpmValueError(f"no {alg_name(sel.hash_alg)} value for PCR {p}")
            v = bank[p]
            if len(v) != DIGEST_SIZES[sel.hash_alg]:
                raise TpmValueError(f"PCR {p} value is {len(v)} bytes, {alg_name(sel.hash_alg)} "
                                 f"needs {DIGEST_SIZES[sel.hash_alg]}")
            out.append(v)
    return out


def quote_pcr_digest(
    hash_alg: int, selections: Iterable[PcrSelection], values: Mapping[int, Mapping[int, bytes]]
) -> bytes:
    """The ``pcrDigest`` a TPM2_Quote would contain for these PCR values.

    ``hash_alg`` is the hash of the signing scheme (the quote digest uses the
    signer's scheme hash, not the bank's).
    """
    return digest(hash_alg, b"".join(values_in_selection_order(selections, values)))


def policy_pcr_digest(
    selections: Iterable[PcrSelection],
    values: Mapping[int, Mapping[int, bytes]],
    *,
    policy_hash_alg: int,
    previous: bytes | None = None,
) -> bytes:
    """TPM2_PolicyPCR update: H(previous || TPM_CC_PolicyPCR || TPML_PCR_SELECTION || H(values)).

    ``previous`` defaults to the all-zero digest a fresh policy session starts with.
    Raises TpmValueError for an unsupported policy hash, a wrongly sized ``previous``
    or PCR values that do not match the selection.
    """
    sels = tuple(selections)
    size = DIGEST_SIZES.get(policy_hash_alg)
    if size is None:
        raise TpmValueError(f"{alg_name(policy_hash_alg)} is not a supported policy hash")
    prev = bytes(size) if previous is None else previous
    if len(prev) != size:
        raise TpmValueError(f"previous policy digest is {len(prev)} bytes, "
                            f"{alg_name(policy_hash_alg)} needs {size}")
    pcr_digest = digest(policy_hash_alg, b"".join(values_in_selection_order(sels, values)))
    return digest(
        policy_hash_alg, prev + u32(TPM_CC_POLICY_PCR) + marshal_pcr_selections(sels) + pcr_digest
    )

