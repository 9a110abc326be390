"""Framing: split a TCG event log into records, without decoding event data.

Two record formats exist (TCG PC Client Platform Firmware Profile, section 10):

* the SHA-1 format: TCG_PCR_EVENT records (pcrIndex, eventType, SHA-1 digest,
  eventSize, event), used alone by TPM 1.2 and some TPM 2.0 firmware;
* the crypto-agile format: one TCG_PCR_EVENT header whose data is the
  "Spec ID Event03" structure listing the digest algorithms and their sizes,
  then TCG_PCR_EVENT2 records (pcrIndex, eventType, TPML_DIGEST_VALUES,
  eventSize, event).  Intel TDX CCEL logs use the same records with
  measurement-register indices; they are told apart by the header's index.

This path is kept free of event-data decoding: parse + replay of a typical log
must stay in the low hundreds of microseconds (see ``benchmarks/eventlog.py``).
Only an all-0x00 or all-0xFF tail is treated as padding; every other problem is
a typed :class:`~bootwatch.errors.EventLogError` naming the byte offset and the
record index.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from bootwatch.eventlog.errors import (
    EmptyEventLogError,
    EventLogError,
    EventLogLimitError,
    NotAnEventLogError,
    TruncatedEventLogError,
)
from bootwatch.eventlog.model import (
    DEFAULT_LENIENCIES,
    DEFAULT_LIMITS,
    KNOWN_DIGEST_SIZES,
    PCR_INDEX_NONE,
    DigestAlgorithm,
    EventType,
    Leniency,
    Limits,
    LogFormat,
    SpecIdEvent,
    UnverifiedEvent,
    UnverifiedEventLog,
    alg_name,
)

__all__ = ["MAX_PCR_INDEX", "SPEC_ID_SIGNATURE", "parse_log"]

#: Highest PCR index a record may name (PC Client TPMs have 24; leave headroom).
MAX_PCR_INDEX = 31
#: Largest digest size accepted for an algorithm the Spec ID declares.
MAX_DIGEST_SIZE = 128
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"

_HDR1 = struct.Struct("<II20sI")  # TCG_PCR_EVENT: pcrIndex, eventType, digest, eventSize
_HDR2 = struct.Struct("<III")  # TCG_PCR_EVENT2: pcrIndex, eventType, digests.count
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SPEC_FIXED = struct.Struct("<16sIBBBBI")

_SHA1 = 0x0004
_NO_ACTION = int(EventType.EV_NO_ACTION)


def _padding_start(data: bytes) -> int:
    """Offset where the all-0x00 or all-0xFF tail of ``data`` begins (``len(data)`` if none).

    Computed once per log so that "is the rest padding?" is O(1) per record: a
    hostile log of many zero-typed records cannot make framing quadratic.
    """
    return min(len(data.rstrip(b"\x00")), len(data.rstrip(b"\xff")))


def _check_pcr(pcr: int, index: int, pos: int) -> None:
    if pcr > MAX_PCR_INDEX and pcr != PCR_INDEX_NONE:
        raise EventLogError(
            f"PCR index {pcr:#x} is out of range (0-{MAX_PCR_INDEX} or 0xffffffff)",
            offset=pos,
            event_index=index,
        )


def parse_log(
    data: bytes,
    *,
    limits: Limits = DEFAULT_LIMITS,
    leniencies: Iterable[Leniency] = DEFAULT_LENIENCIES,
) -> UnverifiedEventLog:
    """Frame ``data`` as a TCG event log (SHA-1, crypto-agile or CCEL).

    Raises :class:`~bootwatch.errors.EventLogError` (or a subclass) with the byte
    offset and record index of the first problem.  Nothing is verified here.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    if size == 0:
        raise EmptyEventLogError("empty event log (0 bytes): no records to read", offset=0)
    if size > limits.max_log_size:
        raise EventLogLimitError(
            f"event log of {size} bytes is over the limit of {limits.max_log_size} bytes",
            offset=limits.max_log_size,
        )
    pad_start = _padding_start(data)
    if size < _HDR1.size:
        if pad_start == 0:
            raise NotAnEventLogError(f"event log holds only {size} bytes of padding", offset=0)
        raise NotAnEventLogError(
            f"too short for a TCG event log: {size} bytes, a first record needs at least "
            f"{_HDR1.size}",
            offset=0,
            event_index=0,
        )
    pcr, etype, _digest, esize = _HDR1.unpack_from(data, 0)
    if pcr > MAX_PCR_INDEX and pcr != PCR_INDEX_NONE:
        if pad_start == 0:
            raise NotAnEventLogError("event log holds only padding bytes", offset=0)
        raise NotAnEventLogError(
            f"not a TCG event log: the first record's PCR index {pcr:#010x} is not a PCR "
            f"(expected 0-{MAX_PCR_INDEX} or 0xffffffff)",
            offset=0,
            event_index=0,
        )
    if etype == _NO_ACTION and esize >= len(SPEC_ID_SIGNATURE) and data[32:48] == SPEC_ID_SIGNATURE:
        return _parse_agile(data, pcr, esize, limits, frozenset(leniencies), pad_start)
    return _parse_sha1(data, limits, pad_start)


def _parse_sha1(data: bytes, limits: Limits, pad_start: int) -> UnverifiedEventLog:
    """Frame a log of TCG_PCR_EVENT records only (the SHA-1 format)."""
    n = len(data)
    pos = 0
    index = 0
    events: list[UnverifiedEvent] = []
    append = events.append
    unpack = _HDR1.unpack_from
    max_data = limits.max_event_data_size
    max_count = limits.max_event_count
    padding = b""
    while pos < n:
        if n - pos < 32:
            if pos >= pad_start:
                padding = data[pos:]
                break
            raise TruncatedEventLogError(
                f"truncated record header: {n - pos} bytes left, a TCG_PCR_EVENT header needs 32",
                offset=pos,
                event_index=index,
            )
        pcr, etype, digest, esize = unpack(data, pos)
        if (pcr == etype == 0 or esize > max_data or pos + 32 + esize > n) and pos >= pad_start:
            padding = data[pos:]
            break
        _check_pcr(pcr, index, pos)
        if esize > max_data:
            raise EventLogLimitError(
                f"event data of {esize} bytes is over the limit of {max_data} bytes",
                offset=pos + 28,
                event_index=index,
            )
        end = pos + 32 + esize
        if end > n:
            raise TruncatedEventLogError(
                f"event data of {esize} bytes runs past the end of the log ({n - pos - 32} left)",
                offset=pos + 28,
                event_index=index,
            )
        if index >= max_count:
            raise EventLogLimitError(
                f"more than {max_count} records", offset=pos, event_index=index
            )
        append(UnverifiedEvent(index, pos, pcr, etype, {_SHA1: digest}, data[pos + 32 : end]))
        index += 1
        pos = end
    if not events:
        raise NotAnEventLogError("event log holds only padding bytes", offset=0)
    return UnverifiedEventLog(
        format=LogFormat.TCG1,
        algorithms=(DigestAlgorithm(_SHA1, 20),),
        events=tuple(events),
        spec_id=None,
        padding=padding,
        leniencies=(),
        size=n,
    )


def _parse_spec_id(
    data: bytes, esize: int, limits: Limits, leniencies: frozenset[Leniency]
) -> tuple[SpecIdEvent, int, tuple[Leniency, ...]]:
    """Parse the Spec ID Event03 at offset 32; return it, the header's end and leniencies used."""
    n = len(data)
    start = 32
    end = start + esize
    if end > n:
        raise TruncatedEventLogError(
            f"Spec ID event of {esize} bytes runs past the end of the log",
            offset=28,
            event_index=0,
        )
    if esize < _SPEC_FIXED.size + 1:
        raise EventLogError(
            f"Spec ID event too short: {esize} bytes, at least {_SPEC_FIXED.size + 1} needed",
            offset=28,
            event_index=0,
        )
    sig, pclass, vminor, vmajor, errata, uintn, nalg = _SPEC_FIXED.unpack_from(data, start)
    if nalg == 0 or nalg > limits.max_digest_count:
        raise EventLogError(
            f"Spec ID event lists {nalg} digest algorithms (1-{limits.max_digest_count} accepted)",
            offset=start + 24,
            event_index=0,
        )
    p = start + _SPEC_FIXED.size
    if p + 4 * nalg + 1 > end:
        raise EventLogError(
            f"Spec ID event too short for its {nalg} digest algorithms",
            offset=p,
            event_index=0,
        )
    algs: list[DigestAlgorithm] = []
    seen: set[int] = set()
    for _ in range(nalg):
        alg_id, dsize = struct.unpack_from("<HH", data, p)
        known = KNOWN_DIGEST_SIZES.get(alg_id)
        if known is not None and known != dsize:
            raise EventLogError(
                f"Spec ID event declares {alg_name(alg_id)} with digest size {dsize}, "
                f"it is {known}",
                offset=p,
                event_index=0,
            )
        if dsize == 0 or dsize > MAX_DIGEST_SIZE:
            raise EventLogError(
                f"Spec ID event declares {alg_name(alg_id)} with digest size {dsize} "
                f"(1-{MAX_DIGEST_SIZE} accepted)",
                offset=p,
                event_index=0,
            )
        if alg_id in seen:
            raise EventLogError(
                f"Spec ID event lists {alg_name(alg_id)} twice", offset=p, event_index=0
            )
        seen.add(alg_id)
        algs.append(DigestAlgorithm(alg_id, dsize))
        p += 4
    vsize = data[p]
    p += 1
    used: tuple[Leniency, ...] = ()
    if p + vsize > end:
        if Leniency.SPECID_VENDORINFO_OUTSIDE_EVENT in leniencies and p + vsize <= n:
            used = (Leniency.SPECID_VENDORINFO_OUTSIDE_EVENT,)
            end = p + vsize
        else:
            raise EventLogError(
                f"Spec ID vendorInfoSize {vsize} runs past the Spec ID event "
                f"({end - p} bytes left in it)",
                offset=p - 1,
                event_index=0,
            )
    spec = SpecIdEvent(
        signature=sig,
        platform_class=pclass,
        spec_version_minor=vminor,
        spec_version_major=vmajor,
        spec_errata=errata,
        uintn_size=uintn,
        algorithms=tuple(algs),
        vendor_info=data[p : p + vsize],
    )
    return spec, end, used


def _parse_agile(
    data: bytes,
    header_pcr: int,
    esize: int,
    limits: Limits,
    leniencies: frozenset[Leniency],
    pad_start: int,
) -> UnverifiedEventLog:
    """Frame a crypto-agile (or CCEL) log: Spec ID header, then TCG_PCR_EVENT2 records."""
    if header_pcr == 0:
        fmt = LogFormat.TCG2
    elif 1 <= header_pcr <= 4:
        # CC event logs (UEFI EFI_CC_EVENT, Intel TDX CCEL) carry the MR index of
        # RTMR0 (1) in the header record; TPM logs always carry PCR 0 there.
        fmt = LogFormat.CCEL
    else:
        raise EventLogError(
            f"Spec ID header record has index {header_pcr:#x}; a TPM log has 0 there "
            "and a CC event log 1",
            offset=0,
            event_index=0,
        )
    spec, pos, used = _parse_spec_id(data, esize, limits, leniencies)
    algs = spec.algorithms
    header = UnverifiedEvent(0, 0, header_pcr, _NO_ACTION, {_SHA1: data[8:28]}, data[32:pos])
    events: list[UnverifiedEvent] = [header]
    append = events.append
    alg_ids = tuple(a.alg_id for a in algs)
    sizes = {a.alg_id: a.size for a in algs}
    nalg = len(algs)
    # Fast path: one unpack for the fixed part of a record whose digests come in
    # the Spec ID order (every corpus log): pcr, type, count, (alg, digest)*, size.
    fast = struct.Struct("<III" + "".join(f"H{a.size}s" for a in algs) + "I")
    fast_size = fast.size
    fast_unpack = fast.unpack_from
    last = 3 + 2 * nalg
    a0 = alg_ids[0]
    a1 = alg_ids[1] if nalg > 1 else a0
    hdr_unpack = _HDR2.unpack_from
    u32 = _U32.unpack_from
    new_event = tuple.__new__
    event_cls = UnverifiedEvent
    max_data = limits.max_event_data_size
    max_count = limits.max_event_count
    max_digests = limits.max_digest_count
    n = len(data)
    index = 1
    padding = b""
    while pos < n:
        if pos + fast_size <= n:
            vals = fast_unpack(data, pos)
            pcr, etype, count = vals[0], vals[1], vals[2]
            if count == nalg and (vals[3] == a0 if nalg == 1 else vals[3:last:2] == alg_ids):
                if pcr == etype == 0 and pos >= pad_start:
                    padding = data[pos:]
                    break
                if pcr > MAX_PCR_INDEX and pcr != PCR_INDEX_NONE:
                    _check_pcr(pcr, index, pos)
                dsize = vals[last]
                p = pos + fast_size
                end = p + dsize
                if dsize <= max_data and end <= n and index < max_count:
                    if nalg == 1:
                        digests = {a0: vals[4]}
                    elif nalg == 2:
                        digests = {a0: vals[4], a1: vals[6]}
                    else:
                        digests = dict(zip(alg_ids, vals[4:last:2], strict=False))
                    append(
                        new_event(
                            event_cls,
                            (
                                index,
                                pos,
                                pcr,
                                etype,
                                digests,
                                data[p:end],
                            ),
                        )
                    )
                    index += 1
                    pos = end
                    continue
        # Slow path: any digest order or subset, short tails, and every error.
        if n - pos < 16:
            if pos >= pad_start:
                padding = data[pos:]
                break
            raise TruncatedEventLogError(
                f"truncated record header: {n - pos} bytes left, a TCG_PCR_EVENT2 needs at "
                "least 16",
                offset=pos,
                event_index=index,
            )
        pcr, etype, count = hdr_unpack(data, pos)
        if (pcr == etype == 0 or count != nalg) and pos >= pad_start:
            padding = data[pos:]
            break
        if count == 0 or count > max_digests:
            raise EventLogError(
                f"record lists {count} digests (1-{max_digests} accepted)",
                offset=pos + 8,
                event_index=index,
            )
        digests, p = _read_digests(data, pos + 12, count, sizes, index, pos)
        _check_pcr(pcr, index, pos)
        if p + 4 > n:
            if pos >= pad_start:
                padding = data[pos:]
                break
            raise TruncatedEventLogError(
                "record ends before its eventSize field", offset=p, event_index=index
            )
        (dsize,) = u32(data, p)
        p += 4
        if dsize > max_data:
            if pos >= pad_start:
                padding = data[pos:]
                break
            raise EventLogLimitError(
                f"event data of {dsize} bytes is over the limit of {max_data} bytes",
                offset=p - 4,
                event_index=index,
            )
        end = p + dsize
        if end > n:
            if pos >= pad_start:
                padding = data[pos:]
                break
            raise TruncatedEventLogError(
                f"event data of {dsize} bytes runs past the end of the log ({n - p} left)",
                offset=p - 4,
                event_index=index,
            )
        if index >= max_count:
            raise EventLogLimitError(
                f"more than {max_count} records", offset=pos, event_index=index
            )
        append(UnverifiedEvent(index, pos, pcr, etype, digests, data[p:end]))
        index += 1
        pos = end
    return UnverifiedEventLog(
        format=fmt,
        algorithms=algs,
        events=tuple(events),
        spec_id=spec,
        padding=padding,
        leniencies=used,
        size=n,
    )


def _read_digests(
    data: bytes, p: int, count: int, sizes: dict[int, int], index: int, pos: int
) -> tuple[dict[int, bytes], int]:
    """Slow path of TPML_DIGEST_VALUES: any order, any subset of the declared algorithms."""
    n = len(data)
    digests: dict[int, bytes] = {}
    for _ in range(count):
        if p + 2 > n:
            raise TruncatedEventLogError(
                "record ends inside its digest list", offset=p, event_index=index
            )
        (alg_id,) = _U16.unpack_from(data, p)
        dsize = sizes.get(alg_id)
        if dsize is None:
            raise EventLogError(
                f"digest algorithm {alg_name(alg_id)} is not declared in the Spec ID event",
                offset=p,
                event_index=index,
            )
        if alg_id in digests:
            raise EventLogError(
                f"record lists a {alg_name(alg_id)} digest twice", offset=p, event_index=index
            )
        if p + 2 + dsize > n:
            raise TruncatedEventLogError(
                f"{alg_name(alg_id)} digest runs past the end of the log",
                offset=p,
                event_index=index,
            )
        digests[alg_id] = data[p + 2 : p + 2 + dsize]
        p += 2 + dsize
    return digests, p
