"""Replay: compute the PCR values a log implies, bank by bank.

Rules (TCG PC Client PFP, confirmed on the corpus, see
``shared/reference/eventlog-corpus.md``):

* EV_NO_ACTION records are never extended;
* a ``StartupLocality`` EV_NO_ACTION in PCR0 sets PCR0's initial value to
  ``00..0<locality>`` (go-tpm-tools ``glinux-alex.bin``: locality 3);
* an EV_EFI_HCRTM_EVENT means the H-CRTM started the platform: PCR0 starts at
  ``00..04`` (tpm2-tss ``binary_measurements_hcrtm.bin``);
* PCRs 17-22 reset to all 0xFF, every other PCR to zero (CCEL MRs: zero).

Where the PFP defines a record's digest as the hash of its event data
(EV_SEPARATOR, EV_ACTION, EV_EFI_ACTION, EV_EFI_VARIABLE_*, EV_EFI_GPT_EVENT,
EV_OMIT_BOOT_DEVICE_EVENTS, EV_S_CRTM_VERSION) the digest is checked and a
mismatch is reported as a :class:`Finding`, never an exception: the log is
still replayed as the TPM saw it.  Nothing here decodes event data beyond the
UEFI_VARIABLE_DATA header needed for EV_EFI_VARIABLE_BOOT.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping

from bootwatch.eventlog.model import (
    HASHLIB_NAMES,
    EventType,
    Extend,
    Finding,
    LogFormat,
    Replay,
    UnverifiedEventLog,
    alg_name,
    event_type_name,
)

__all__ = ["STARTUP_LOCALITY_SIGNATURE", "hash_function", "initial_pcr_value", "replay"]

STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
#: Number of PCRs of a PC Client TPM; records naming a higher index extend nothing.
PCR_COUNT = 24

_NO_ACTION = int(EventType.EV_NO_ACTION)
_HCRTM = int(EventType.EV_EFI_HCRTM_EVENT)
_VARIABLE_BOOT = int(EventType.EV_EFI_VARIABLE_BOOT)

#: Event types whose digest the PFP defines as the hash of the whole event data.
DATA_DIGEST_TYPES: frozenset[int] = frozenset(
    {
        int(EventType.EV_SEPARATOR),
        int(EventType.EV_ACTION),
        int(EventType.EV_EFI_ACTION),
        int(EventType.EV_S_CRTM_VERSION),
        int(EventType.EV_OMIT_BOOT_DEVICE_EVENTS),
        int(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG),
        int(EventType.EV_EFI_VARIABLE_BOOT2),
        int(EventType.EV_EFI_VARIABLE_AUTHORITY),
        int(EventType.EV_EFI_GPT_EVENT),
        _VARIABLE_BOOT,
    }
)

_VARIABLE_TYPES: frozenset[int] = frozenset(
    {
        _VARIABLE_BOOT,
        int(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG),
        int(EventType.EV_EFI_VARIABLE_BOOT2),
        int(EventType.EV_EFI_VARIABLE_AUTHORITY),
    }
)

_VAR_HDR = struct.Struct("<16sQQ")


def hash_function(alg_id: int) -> Callable[[bytes], hashlib._Hash] | None:
    """hashlib constructor for a TPM_ALG_ID, or None when this Python cannot compute it."""
    name = HASHLIB_NAMES.get(alg_id)
    if name is None:
        return None
    direct = getattr(hashlib, name, None)
    if direct is not None:
        fn: Callable[[bytes], hashlib._Hash] = direct
        return fn
    try:
        hashlib.new(name)
    except ValueError:
        return None

    def _new(data: bytes, _name: str = name) -> hashlib._Hash:
        return hashlib.new(_name, data)

    return _new


def initial_pcr_value(
    pcr: int, size: int, *, locality: int | None, hcrtm: bool, ccel: bool = False
) -> bytes:
    """Reset value of ``pcr``: 0xFF.. for PCR17-22, 00..0<locality> for PCR0, else zero."""
    if ccel:
        return bytes(size)
    if 17 <= pcr <= 22:
        return b"\xff" * size
    if pcr == 0:
        loc = 4 if hcrtm else (locality or 0)
        return bytes(size - 1) + bytes((loc,))
    return bytes(size)


def _variable_data(data: bytes) -> bytes | None:
    """VariableData of a UEFI_VARIABLE_DATA, or None when the header does not frame it."""
    if len(data) < _VAR_HDR.size:
        return None
    _guid, name_len, data_len = _VAR_HDR.unpack_from(data, 0)
    start = _VAR_HDR.size + 2 * name_len
    if start + data_len > len(data):
        return None
    return data[start : start + data_len]


def replay(
    log: UnverifiedEventLog,
    *,
    banks: Iterable[int] | None = None,
    data_banks: Iterable[int] | None = None,
) -> Replay:
    """Replay the banks of ``log``; report digest/data mismatches and oddities as findings.

    ``banks`` (TPM_ALG_IDs) limits the work to the banks a caller will compare,
    e.g. the SHA-256 bank a quote covers: the others are neither extended nor
    checked against the event data, and the result has no values, findings
    or initial values for them.  A requested bank the log does not declare is
    simply absent from the result (as a bank the log lacks always is).  The
    default (None) replays every declared bank.

    ``data_banks`` adds banks whose digests of data-bound events (the PFP's
    "digest = hash of the event data" types) are checked against the data, and
    reported as ``digest_mismatch`` findings, without being replayed: a verifier
    that compares one bank with a quote still refuses a log whose other banks
    disagree with the data (as ``bootwatch log replay`` does).
    """
    findings: list[Finding] = [
        Finding(
            "framing_leniency",
            0,
            f"the log needed the named leniency {len_.value!r} to be framed",
        )
        for len_ in log.leniencies
    ]
    extends: list[Extend] = []
    locality: int | None = None
    hcrtm = False
    ccel = log.format is LogFormat.CCEL
    pcr0_extended = False
    hashers: dict[int, Callable[[bytes], hashlib._Hash]] = {}
    wanted = None if banks is None else frozenset(banks)
    algorithms = tuple(
        alg for alg in log.algorithms if wanted is None or alg.alg_id in wanted
    )
    for alg in algorithms:
        fn = hash_function(alg.alg_id)
        if fn is None:
            findings.append(
                Finding(
                    "bank_not_replayable",
                    None,
                    f"the {alg.name} bank cannot be replayed: no implementation of that "
                    "digest algorithm",
                )
            )
        else:
            hashers[alg.alg_id] = fn
    data_types = DATA_DIGEST_TYPES
    skip_header = log.spec_id is not None
    append = extends.append
    new_extend = tuple.__new__
    extend_cls = Extend
    data_hashers = dict(hashers)
    if data_banks is not None:
        extra = frozenset(data_banks)
        for alg in log.algorithms:
            if alg.alg_id in extra and alg.alg_id not in data_hashers:
                fn = hash_function(alg.alg_id)
                if fn is not None:
                    data_hashers[alg.alg_id] = fn
    hash_items = tuple(data_hashers.items())
    no_action = _NO_ACTION
    hcrtm_type = _HCRTM
    pcr_count = PCR_COUNT
    for index, _offset, pcr, etype, digests, data in log.events:
        if etype == no_action:
            if index == 0 and skip_header:
                continue
            if data[:16] == STARTUP_LOCALITY_SIGNATURE and not ccel:
                if pcr != 0 or len(data) != 17:
                    findings.append(
                        Finding(
                            "startup_locality_malformed",
                            index,
                            f"StartupLocality event in PCR {pcr} with {len(data)} data "
                            "bytes (PCR 0 and 17 bytes expected); ignored",
                        )
                    )
                elif pcr0_extended:
                    findings.append(
                        Finding(
                            "startup_locality_late",
                            index,
                            "StartupLocality event after PCR0 was extended; ignored",
                        )
                    )
                else:
                    locality = data[16]
            for alg_id, digest in digests.items():
                if digest.count(0) != len(digest):
                    findings.append(
                        Finding(
                            "no_action_digest_not_zero",
                            index,
                            f"EV_NO_ACTION record carries a non-zero {alg_name(alg_id)} digest "
                            "(not extended)",
                        )
                    )
                    break
            continue
        if pcr >= pcr_count:
            findings.append(
                Finding(
                    "pcr_index_not_extended",
                    index,
                    f"{event_type_name(etype)} names index {pcr:#x}, which is no PCR: not extended",
                )
            )
            continue
        if pcr == 0:
            pcr0_extended = True
            if etype == hcrtm_type:
                hcrtm = True
        append(new_extend(extend_cls, (index, pcr, digests)))
        if etype in data_types:
            for alg_id, fn in hash_items:
                if fn(data).digest() != digests.get(alg_id, b""):
                    _check_data_digest(index, etype, data, digests, data_hashers, findings)
                    break
    pcrs: dict[int, dict[int, bytes]] = {}
    initial: dict[int, dict[int, bytes]] = {}
    for alg in algorithms:
        fn = hashers.get(alg.alg_id)
        if fn is None:
            continue
        alg_id = alg.alg_id
        size = alg.size
        values: dict[int, bytes] = {}
        starts: dict[int, bytes] = {}
        if locality is not None or hcrtm:
            starts[0] = values[0] = initial_pcr_value(
                0, size, locality=locality, hcrtm=hcrtm, ccel=ccel
            )
        for event_index, p, digests in extends:
            ext = digests.get(alg_id)
            if ext is None:
                findings.append(
                    Finding(
                        "digest_missing",
                        event_index,
                        f"record has no {alg.name} digest: the {alg.name} bank skips it",
                    )
                )
                continue
            current = values.get(p)
            if current is None:
                current = starts[p] = initial_pcr_value(
                    p, size, locality=locality, hcrtm=hcrtm, ccel=ccel
                )
            values[p] = fn(current + ext).digest()
        pcrs[alg_id] = values
        initial[alg_id] = starts
    return Replay(
        pcrs=pcrs,
        findings=tuple(findings),
        extends=tuple(extends),
        startup_locality=locality,
        hcrtm=hcrtm,
        initial=initial,
    )


def _check_data_digest(
    index: int,
    etype: int,
    data: bytes,
    digests: Mapping[int, bytes],
    hashers: Mapping[int, Callable[[bytes], hashlib._Hash]],
    findings: list[Finding],
) -> None:
    """Append a finding for each bank whose digest is not the hash of the event data."""
    for alg_id, digest in digests.items():
        fn = hashers.get(alg_id)
        if fn is None or fn(data).digest() == digest:
            continue
        if etype in _VARIABLE_TYPES:
            # PFP: EV_EFI_VARIABLE_BOOT digests VariableData only, and firmware of
            # the TCG EFI Platform 1.2 era did the same for the other variable
            # events (go-eventlog linux_tpm12.bin); the whole structure is the rule
            # elsewhere.  Either is accepted, but for the other variable events the
            # name and GUID are then not measured: a db authority renamed "Shim" hid
            # from the Secure Boot checks (found in review), so it is a finding
            var = _variable_data(data)
            if var is not None and fn(var).digest() == digest:
                if etype != _VARIABLE_BOOT:
                    findings.append(Finding(
                        "variable_name_not_measured", index,
                        f"{event_type_name(etype)}: the {alg_name(alg_id)} digest covers "
                        "the variable's data only, not its name and GUID, so which "
                        "variable it was is not measured"))
                continue
        if etype in _VARIABLE_TYPES and data and fn(data[:-1]).digest() == digest:
            # Seen on shim's "Shim" vendor-certificate EV_EFI_VARIABLE_AUTHORITY events
            # (go-attestation sb_cert_eventlog, go-tpm-tools cos-85/cos-93/debian-10):
            # the logged eventSize is one byte longer than what was measured.
            findings.append(
                Finding(
                    "digest_excludes_last_byte",
                    index,
                    f"{event_type_name(etype)}: the {alg_name(alg_id)} digest covers all but "
                    "the last byte of the event data (a known shim logging quirk)",
                )
            )
            continue
        findings.append(
            Finding(
                "digest_mismatch",
                index,
                f"{event_type_name(etype)}: the {alg_name(alg_id)} digest is not the hash "
                "of the event data",
            )
        )
