"""Framing of crafted logs at every limit and error (issue 17).

Logs are written byte by byte (TCG PC Client PFP 10.2: TCG_PCR_EVENT for SHA-1 logs and
the header, the Spec ID Event03, TCG_PCR_EVENT2 records).  Each refusal is checked for
its class, the byte offset and record index it names, and the limit it quotes, since
that is what a person reads to find the bad byte; each limit is tried at and one past
its bound.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from bootwatch.errors import EventLogError, EventLogLimitError
from bootwatch.eventlog import Limits, LogFormat, parse_log
from bootwatch.eventlog.errors import (
    EmptyEventLogError,
    NotAnEventLogError,
    TruncatedEventLogError,
)
from bootwatch.eventlog.model import Leniency

SHA1, SHA256, SM3 = 0x0004, 0x000B, 0x0012
SIZES = {SHA1: 20, SHA256: 32, SM3: 32, 0x7777: 5}
NO_ACTION, POST_CODE = 3, 1


def spec_body(algs: tuple[tuple[int, int], ...] = ((SHA1, 20), (SHA256, 32)),
              vendor: bytes = b"", nalg: int | None = None) -> bytes:
    return (b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2,
                                                    len(algs) if nalg is None else nalg)
            + b"".join(struct.pack("<HH", a, s) for a, s in algs)
            + bytes([len(vendor)]) + vendor)


def header(body: bytes | None = None, *, pcr: int = 0, esize: int | None = None) -> bytes:
    body = spec_body() if body is None else body
    return struct.pack("<II20sI", pcr, NO_ACTION, bytes(20),
                       len(body) if esize is None else esize) + body


def rec2(pcr: int, data: bytes, algs: tuple[int, ...] = (SHA1, SHA256), etype: int = POST_CODE,
         count: int | None = None) -> bytes:
    out = struct.pack("<III", pcr, etype, len(algs) if count is None else count)
    for a in algs:
        out += struct.pack("<H", a) + hashlib.new("sha1" if a == SHA1 else "sha256",
                                                  data).digest()[:SIZES[a]]
    return out + struct.pack("<I", len(data)) + data


def rec1(pcr: int, data: bytes, etype: int = POST_CODE) -> bytes:
    return struct.pack("<II20sI", pcr, etype, hashlib.sha1(data).digest(), len(data)) + data


def err(data: bytes, cls: type[EventLogError] = EventLogError, **kw: object) -> EventLogError:
    with pytest.raises(cls) as info:
        parse_log(data, **kw)  # type: ignore[arg-type]
    return info.value


H = header()
HL = len(H)


# --- whole-log checks -------------------------------------------------------------------------

def test_empty_log() -> None:
    e = err(b"", EmptyEventLogError)
    assert e.offset == 0 and str(e).startswith("empty event log (0 bytes)")


def test_log_size_limit_boundary() -> None:
    data = H + rec2(0, b"a")
    assert len(parse_log(data, limits=Limits(max_log_size=len(data))).events) == 2
    e = err(data, EventLogLimitError, limits=Limits(max_log_size=len(data) - 1))
    assert e.offset == len(data) - 1
    assert f"event log of {len(data)} bytes is over the limit of {len(data) - 1} bytes" in str(e)


@pytest.mark.parametrize("fill", [b"\x00", b"\xff"])
def test_short_log_of_padding(fill: bytes) -> None:
    e = err(fill * 31, NotAnEventLogError)
    assert e.offset == 0 and "holds only 31 bytes of padding" in str(e)


def test_short_log_of_data() -> None:
    e = err(b"\x01" * 31, NotAnEventLogError)
    assert (e.offset, e.event_index) == (0, 0)
    assert "31 bytes, a first record needs at least 32" in str(e)


def test_first_pcr_index() -> None:
    assert parse_log(rec1(31, b"x")).events[0].pcr == 31
    assert parse_log(rec1(0xFFFFFFFF, b"x")).events[0].pcr == 0xFFFFFFFF
    e = err(rec1(32, b"x"), NotAnEventLogError)
    assert (e.offset, e.event_index) == (0, 0)
    assert "the first record's PCR index 0x00000020 is not a PCR (expected 0-31" in str(e)
    e = err(b"\xff" * 40, NotAnEventLogError)
    assert "holds only padding bytes" in str(e)
    e = err(bytes(40), NotAnEventLogError)
    assert "holds only padding bytes" in str(e)


# --- SHA-1 (TCG 1.2) logs -----------------------------------------------------------------------

def test_sha1_log_records() -> None:
    log = parse_log(rec1(0, b"a") + rec1(7, b"bb", etype=4) + rec1(31, b""))
    assert log.format is LogFormat.TCG1 and log.spec_id is None
    assert [(e.index, e.offset, e.pcr, e.event_type, e.data) for e in log.events] == [
        (0, 0, 0, POST_CODE, b"a"), (1, 33, 7, 4, b"bb"), (2, 67, 31, POST_CODE, b"")]
    assert log.events[1].digests == {SHA1: hashlib.sha1(b"bb").digest()}
    assert [(a.alg_id, a.size) for a in log.algorithms] == [(SHA1, 20)]
    assert log.size == 99 and log.padding == b""


def test_sha1_errors_name_offset_and_record() -> None:
    one = rec1(0, b"a")
    e = err(one + b"\x01" * 10, TruncatedEventLogError)
    assert (e.offset, e.event_index) == (33, 1)
    assert "10 bytes left, a TCG_PCR_EVENT header needs 32" in str(e)
    e = err(one + rec1(1, b"abcd")[:-2], TruncatedEventLogError)
    assert (e.offset, e.event_index) == (33 + 28, 1)
    assert "event data of 4 bytes runs past the end of the log (2 left)" in str(e)
    e = err(one + rec1(32, b"x"))
    assert (e.offset, e.event_index) == (33, 1)
    assert "PCR index 0x20 is out of range (0-31 or 0xffffffff)" in str(e)


def test_sha1_limits_at_the_boundary() -> None:
    data = rec1(0, b"abcd") + rec1(1, b"ef")
    assert len(parse_log(data, limits=Limits(max_event_data_size=4)).events) == 2
    e = err(data, EventLogLimitError, limits=Limits(max_event_data_size=3))
    assert (e.offset, e.event_index) == (28, 0)
    assert "event data of 4 bytes is over the limit of 3 bytes" in str(e)
    assert len(parse_log(data, limits=Limits(max_event_count=2)).events) == 2
    e = err(data, EventLogLimitError, limits=Limits(max_event_count=1))
    assert (e.offset, e.event_index) == (36, 1)
    assert "more than 1 records" in str(e)


def test_sha1_padding_tail() -> None:
    data = rec1(0, b"a") + rec1(1, b"b")
    log = parse_log(data + bytes(40))
    assert len(log.events) == 2 and log.padding == bytes(40)
    log = parse_log(data + b"\xff" * 5)
    assert len(log.events) == 2 and log.padding == b"\xff" * 5


# --- Spec ID header -------------------------------------------------------------------------------

def test_spec_id_fields() -> None:
    log = parse_log(header(spec_body(vendor=b"vend")) + rec2(0, b"a"))
    s = log.spec_id
    assert s is not None and s.vendor_info == b"vend"
    assert (s.platform_class, s.spec_version_minor, s.spec_version_major, s.spec_errata,
            s.uintn_size) == (0, 0, 2, 0, 2)
    assert [(a.alg_id, a.size) for a in log.algorithms] == [(SHA1, 20), (SHA256, 32)]
    assert log.format is LogFormat.TCG2 and log.events[0].data == spec_body(vendor=b"vend")
    assert log.events[0].digests == {SHA1: bytes(20)}


@pytest.mark.parametrize("pcr", [1, 2, 3, 4])
def test_cc_event_log_header_index(pcr: int) -> None:
    assert parse_log(header(pcr=pcr) + rec2(1, b"a")).format is LogFormat.CCEL


@pytest.mark.parametrize("pcr", [5, 31])
def test_header_index_of_neither_kind(pcr: int) -> None:
    e = err(header(pcr=pcr) + rec2(1, b"a"))
    assert (e.offset, e.event_index) == (0, 0)
    assert f"Spec ID header record has index {pcr:#x}" in str(e)


def test_spec_id_errors() -> None:
    body = spec_body()
    e = err(header(body, esize=len(body) + 10), TruncatedEventLogError)
    assert (e.offset, e.event_index) == (28, 0)
    assert f"Spec ID event of {len(body) + 10} bytes runs past the end" in str(e)
    short = body[:24]
    e = err(header(short, esize=24) + bytes(8))
    assert e.offset == 28 and "Spec ID event too short: 24 bytes, at least 29 needed" in str(e)
    e = err(header(spec_body(((SHA1, 20),), nalg=0)))
    assert e.offset == 56 and "lists 0 digest algorithms (1-16 accepted)" in str(e)
    e = err(header(spec_body(((SHA1, 20),), nalg=17)) + bytes(80))
    assert e.offset == 56 and "lists 17 digest algorithms (1-16 accepted)" in str(e)
    e = err(header(spec_body(((SHA1, 20),), nalg=3)))
    assert e.offset == 60 and "too short for its 3 digest algorithms" in str(e)


def test_spec_id_digest_count_limit_boundary() -> None:
    algs = ((SHA1, 20), (SHA256, 32))
    assert parse_log(header(spec_body(algs)) + rec2(0, b"a"),
                     limits=Limits(max_digest_count=2)).events
    e = err(header(spec_body(algs)) + rec2(0, b"a"), limits=Limits(max_digest_count=1))
    assert "lists 2 digest algorithms (1-1 accepted)" in str(e)


def test_spec_id_algorithm_errors() -> None:
    e = err(header(spec_body(((SHA1, 20), (SHA256, 20)))))
    assert e.offset == 64 and "declares sha256 with digest size 20, it is 32" in str(e)
    e = err(header(spec_body(((0x7777, 0),))))
    assert e.offset == 60 and "digest size 0 (1-128 accepted)" in str(e)
    e = err(header(spec_body(((0x7777, 129),))))
    assert e.offset == 60 and "digest size 129 (1-128 accepted)" in str(e)
    e = err(header(spec_body(((SHA1, 20), (SHA1, 20)))))
    assert e.offset == 64 and "lists sha1 twice" in str(e)
    log = parse_log(header(spec_body(((0x7777, 128),))) + struct.pack("<IIIH", 0, 1, 1, 0x7777)
                    + bytes(128) + struct.pack("<I", 0))
    assert [(a.alg_id, a.size) for a in log.algorithms] == [(0x7777, 128)]


def test_vendor_info_outside_the_event() -> None:
    body = spec_body(vendor=b"vendor")
    cut = len(body) - 6
    data = header(body, esize=cut) + rec2(0, b"a")
    log = parse_log(data)  # named leniency, on by default
    assert log.leniencies == (Leniency.SPECID_VENDORINFO_OUTSIDE_EVENT,)
    assert log.spec_id is not None and log.spec_id.vendor_info == b"vendor"
    assert [e.data for e in log.events[1:]] == [b"a"]
    e = err(data, leniencies=())
    assert e.offset == 32 + cut - 1
    assert "Spec ID vendorInfoSize 6 runs past the Spec ID event (0 bytes left in it)" in str(e)


# --- TCG_PCR_EVENT2 records ---------------------------------------------------------------

def test_records_in_another_digest_order_and_subsets() -> None:
    log = parse_log(H + rec2(0, b"a", (SHA256, SHA1)) + rec2(1, b"b", (SHA256,))
                    + rec2(2, b"c"))
    assert [sorted(e.digests) for e in log.events[1:]] == [[SHA1, SHA256], [SHA256],
                                                            [SHA1, SHA256]]
    assert log.events[1].digests[SHA256] == hashlib.sha256(b"a").digest()
    assert [(e.index, e.offset) for e in log.events[1:]] == [
        (1, HL), (2, HL + 73), (3, HL + 73 + 51)]


def test_single_and_three_bank_logs() -> None:
    log = parse_log(header(spec_body(((SHA256, 32),))) + rec2(0, b"a", (SHA256,)))
    assert log.events[1].digests == {SHA256: hashlib.sha256(b"a").digest()}
    algs = ((SHA1, 20), (SHA256, 32), (SM3, 32))
    log = parse_log(header(spec_body(algs)) + rec2(0, b"a", (SHA1, SHA256, SM3)))
    assert sorted(log.events[1].digests) == [SHA1, SHA256, SM3]
    assert log.events[1].digests[SM3] == hashlib.sha256(b"a").digest()  # our stand-in bytes


@pytest.mark.parametrize("pcr", [32, 0x100])
def test_record_pcr_out_of_range(pcr: int) -> None:
    for algs in ((SHA1, SHA256), (SHA256, SHA1)):  # fast and slow path
        e = err(H + rec2(0, b"a") + rec2(pcr, b"b", algs))
        assert (e.offset, e.event_index) == (HL + 73, 2)
        assert f"PCR index {pcr:#x} is out of range" in str(e)
    assert parse_log(H + rec2(31, b"a") + rec2(0xFFFFFFFF, b"b")).events[2].pcr == 0xFFFFFFFF


def test_record_digest_count_errors() -> None:
    e = err(H + rec2(0, b"a", (), count=0) + rec2(0, b"b"))
    assert (e.offset, e.event_index) == (HL + 8, 1)
    assert "record lists 0 digests (1-16 accepted)" in str(e)
    big = struct.pack("<III", 0, POST_CODE, 3) + bytes(200)
    e = err(H + big, limits=Limits(max_digest_count=2))
    assert "record lists 3 digests (1-2 accepted)" in str(e)


def test_record_digest_list_errors() -> None:
    e = err(H + struct.pack("<IIIH", 0, POST_CODE, 2, 0x7777) + bytes(60))
    assert (e.offset, e.event_index) == (HL + 12, 1)
    assert "is not declared in the Spec ID event" in str(e)
    twice = struct.pack("<III", 0, POST_CODE, 2) + (struct.pack("<H", SHA1) + bytes(20)) * 2
    e = err(H + twice + struct.pack("<I", 0) + bytes(8))
    assert (e.offset, e.event_index) == (HL + 12 + 22, 1)
    assert "record lists a sha1 digest twice" in str(e)
    e = err(H + struct.pack("<IIIH", 0, POST_CODE, 2, SHA256) + bytes(10), TruncatedEventLogError)
    assert (e.offset, e.event_index) == (HL + 12, 1)
    assert "sha256 digest runs past the end of the log" in str(e)
    e = err(H + struct.pack("<IIIH", 0, POST_CODE, 2, SHA256) + bytes(32) + b"\x01",
            TruncatedEventLogError)
    assert (e.offset, e.event_index) == (HL + 46, 1)
    assert "record ends inside its digest list" in str(e)


def test_record_event_size_errors() -> None:
    r = rec2(0, b"abcd")
    e = err(H + r[:-4 - 4] + b"\x01\x02", TruncatedEventLogError)  # cut inside eventSize
    assert (e.offset, e.event_index) == (HL + 68, 1)
    assert "record ends before its eventSize field" in str(e)
    e = err(H + r[:-2], TruncatedEventLogError)
    assert (e.offset, e.event_index) == (HL + 68, 1)
    assert "event data of 4 bytes runs past the end of the log (2 left)" in str(e)


def test_record_limits_at_the_boundary() -> None:
    data = H + rec2(0, b"abcd") + rec2(1, b"ef")
    assert len(parse_log(data, limits=Limits(max_event_data_size=len(spec_body()))).events) == 3
    assert len(parse_log(data, limits=Limits(max_event_count=3)).events) == 3
    e2 = err(data, EventLogLimitError, limits=Limits(max_event_count=2))
    assert (e2.offset, e2.event_index) == (HL + 76, 2)
    assert "more than 2 records" in str(e2)


def test_record_data_limit_in_both_paths() -> None:
    big = b"x" * 100
    limits = Limits(max_event_data_size=99)
    for algs in ((SHA1, SHA256), (SHA256, SHA1)):
        e = err(H + rec2(0, big, algs) + rec2(1, b"a"), EventLogLimitError, limits=limits)
        assert (e.offset, e.event_index) == (HL + 68, 1)
        assert "event data of 100 bytes is over the limit of 99 bytes" in str(e)
    assert len(parse_log(H + rec2(0, big) + rec2(1, b"a"),
                         limits=Limits(max_event_data_size=100)).events) == 3


@pytest.mark.parametrize("fill", [b"\x00", b"\xff"])
@pytest.mark.parametrize("n", [1, 15, 16, 80])
def test_agile_padding_tail(fill: bytes, n: int) -> None:
    data = H + rec2(0, b"a") + rec2(1, b"b")
    log = parse_log(data + fill * n)
    assert len(log.events) == 3 and log.padding == fill * n


def test_short_garbage_tail_is_truncation() -> None:
    data = H + rec2(0, b"a")
    e = err(data + b"\x01" * 15, TruncatedEventLogError)
    assert (e.offset, e.event_index) == (len(data), 2)
    assert "15 bytes left, a TCG_PCR_EVENT2 needs at least 16" in str(e)


# --- second round: each Spec ID refusal names record 0, exact sizes, fast and slow paths --------

def test_spec_id_refusals_name_record_zero() -> None:
    body = spec_body()
    cases = [
        header(body[:24], esize=24) + bytes(8),
        header(spec_body(((SHA1, 20),), nalg=0)),
        header(spec_body(((SHA1, 20),), nalg=3)),
        header(spec_body(((SHA1, 20), (SHA256, 20)))),
        header(spec_body(((0x7777, 0),))),
        header(spec_body(((SHA1, 20), (SHA1, 20)))),
        header(spec_body(vendor=b"vendor"), esize=len(spec_body(vendor=b"vendor")) - 6),
        header(pcr=5),
    ]
    for i, data in enumerate(cases):
        with pytest.raises(EventLogError) as info:
            parse_log(data + rec2(0, b"a"), leniencies=())
        assert info.value.event_index == 0, i


def test_spec_id_size_boundaries() -> None:
    fixed = spec_body(((SHA1, 20),), nalg=0)[:28]
    # 28 bytes: too short; 29 bytes (fixed part + vendorInfoSize): judged by its algorithm count
    e = err(header(fixed, esize=28) + bytes(40))
    assert str(e) == ("Spec ID event too short: 28 bytes, at least 29 needed "
                      "(at event 0, byte offset 28)")
    e = err(header(fixed + b"\x00", esize=29) + bytes(40))
    assert "lists 0 digest algorithms" in str(e)
    # one algorithm but no room left for vendorInfoSize
    body = spec_body(((SHA1, 20),))[:-1]
    e = err(header(body, esize=len(body)) + bytes(40))
    assert str(e) == ("Spec ID event too short for its 1 digest algorithms "
                      "(at event 0, byte offset 60)")


def test_spec_id_fields_in_full() -> None:
    log = parse_log(header() + rec2(0, b"a"))
    assert log.spec_id is not None and log.spec_id.signature == b"Spec ID Event03\x00"
    assert log.padding == b""
    e = err(header(pcr=5) + rec2(1, b"a"))
    assert str(e) == ("Spec ID header record has index 0x5; a TPM log has 0 there and a CC "
                      "event log 1 (at event 0, byte offset 0)")
    log = parse_log(header(pcr=3) + rec2(1, b"a"))
    assert log.events[0].pcr == 3


def test_algorithm_ids_above_0x7fff() -> None:
    log = parse_log(header(spec_body(((SHA256, 32), (0x8001, 20)))) + struct.pack(
        "<III", 0, POST_CODE, 2) + struct.pack("<H", SHA256) + bytes(32)
        + struct.pack("<H", 0x8001) + bytes(20) + struct.pack("<I", 0))
    assert [(a.alg_id, a.size) for a in log.algorithms] == [(SHA256, 32), (0x8001, 20)]
    assert sorted(log.events[1].digests) == [SHA256, 0x8001]


def test_vendor_info_past_the_end_of_the_log() -> None:
    body = spec_body(vendor=b"v" * 6)
    data = header(body, esize=len(body) - 6)[:-3]  # vendorInfo runs past the log itself
    e = err(data)
    assert "Spec ID vendorInfoSize 6 runs past the Spec ID event" in str(e)


def test_event_size_with_the_top_bit_set() -> None:
    rec = rec2(0, b"abcd")
    big = rec[:68] + struct.pack("<I", 0x80000000) + rec[72:]
    e = err(H + big + rec2(1, b"b"), EventLogLimitError)
    assert (e.offset, e.event_index) == (HL + 68, 1)


def test_duplicate_digest_with_room_for_the_fast_path() -> None:
    twice = (struct.pack("<III", 0, POST_CODE, 2) + (struct.pack("<H", SHA1) + bytes(20)) * 2
             + struct.pack("<I", 0))
    e = err(H + twice + rec2(1, b"padding-the-log-past-a-fast-record"))
    assert str(e) == f"record lists a sha1 digest twice (at event 1, byte offset {HL + 34})"


def test_digest_list_boundaries_on_the_slow_path() -> None:
    r = rec2(0, b"abcd", (SHA256, SHA1))  # the other order: the slow path frames it
    e = err(H + r[:16], TruncatedEventLogError)  # the first digest cut short
    assert str(e) == ("sha256 digest runs past the end of the log "
                      f"(at event 1, byte offset {HL + 12})")
    e = err(H + r[:48], TruncatedEventLogError)  # exactly the second algorithm id
    assert str(e) == f"sha1 digest runs past the end of the log (at event 1, byte offset {HL + 46})"
    e = err(H + r[:47], TruncatedEventLogError)
    assert str(e) == f"record ends inside its digest list (at event 1, byte offset {HL + 46})"
    e = err(H + r[:12 + 34 + 22], TruncatedEventLogError)  # both digests, no eventSize
    assert str(e) == f"record ends before its eventSize field (at event 1, byte offset {HL + 68})"
    e = err(H + r[:12 + 34 + 21], TruncatedEventLogError)
    assert str(e).startswith("sha1 digest runs past the end of the log")


def test_single_bank_record_of_an_undeclared_algorithm() -> None:
    h = header(spec_body(((SHA256, 32),)))
    rec = (struct.pack("<III", 0, POST_CODE, 1) + struct.pack("<H", SM3) + bytes(32)
           + struct.pack("<I", 1) + b"a")
    e = err(h + rec + rec2(1, b"b", (SHA256,)))
    assert (e.offset, e.event_index) == (len(h) + 12, 1)
    assert "is not declared in the Spec ID event" in str(e)


def test_record_of_pcr_0_and_type_0_inside_the_log_is_an_event() -> None:
    # EV_PREBOOT_CERT is type 0: in PCR 0 it looks like a zero header, but it is not padding
    log = parse_log(H + rec2(0, b"cert", etype=0) + rec2(1, b"b"))
    assert [(e.pcr, e.event_type, e.data) for e in log.events[1:]] == [
        (0, 0, b"cert"), (1, POST_CODE, b"b")]
    assert log.padding == b""


# --- third round: input types and exact boundaries ------------------------------------------

def test_bytearray_and_memoryview_input() -> None:
    data = H + rec2(0, b"a")
    for form in (bytearray(data), memoryview(data)):
        log = parse_log(form)  # type: ignore[arg-type]
        assert [e.data for e in log.events[1:]] == [b"a"] and log.size == len(data)
        assert all(type(e.data) is bytes for e in log.events)


def test_log_of_exactly_one_empty_sha1_record() -> None:
    log = parse_log(rec1(0, b""))
    assert len(log.events) == 1 and log.size == 32


def test_sha1_log_of_zeros_names_offset_zero() -> None:
    e = err(bytes(40), NotAnEventLogError)
    assert e.offset == 0 and str(e).startswith("event log holds only padding bytes")


def test_spec_id_signature_in_a_16_byte_event() -> None:
    e = err(header(b"Spec ID Event03\x00", esize=16) + bytes(40))
    assert str(e).startswith("Spec ID event too short: 16 bytes, at least 29 needed")


def test_agile_log_size_and_slow_path_boundaries() -> None:
    last = rec2(1, b"", (SHA256, SHA1))  # slow path, ends exactly after its eventSize
    log = parse_log(H + rec2(0, b"a") + last)
    assert log.size == len(H) + 73 + len(last) and log.events[-1].data == b""
    big = rec2(2, b"x" * 50, (SHA256, SHA1))
    assert parse_log(H + big, limits=Limits(max_event_data_size=max(50, len(spec_body()))))
    two = rec2(3, b"y", (SHA256, SHA1))
    assert parse_log(H + two, limits=Limits(max_digest_count=2)).events[1].digests
