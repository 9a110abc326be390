"""Framing details: padding, limits, truncation and where errors point."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from bootwatch.errors import EventLogError, EventLogLimitError
from bootwatch.eventlog import Limits, LogFormat, parse_log, replay
from bootwatch.eventlog.errors import TruncatedEventLogError
from bootwatch.eventlog.model import EventType, event_type_name

SHARED = Path(
    os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared")
).resolve()
LOGS = SHARED / "corpus" / "eventlogs"
AGILE = LOGS / "go-tpm-tools" / "glinux-alex.bin"
SHA1 = LOGS / "go-tpm-tools" / "debian-10.bin"


@pytest.mark.parametrize("path", [AGILE, SHA1], ids=["agile", "sha1"])
@pytest.mark.parametrize("fill", [b"\x00", b"\xff"], ids=["zeros", "ones"])
def test_all_zero_or_all_ff_tail_is_padding(path: Path, fill: bytes) -> None:
    data = path.read_bytes()
    plain = parse_log(data)
    for n in (1, 7, 31, 300):
        padded = parse_log(data + fill * n)
        assert padded.events == plain.events
        assert padded.padding == fill * n
        assert replay(padded).pcrs == replay(plain).pcrs


@pytest.mark.parametrize("path", [AGILE, SHA1], ids=["agile", "sha1"])
def test_mixed_tail_is_an_error_with_offset(path: Path) -> None:
    data = path.read_bytes()
    with pytest.raises(EventLogError) as info:
        parse_log(data + b"\xff" * 40 + b"\x01")
    assert info.value.offset is not None and info.value.offset >= len(data)
    assert info.value.event_index == len(parse_log(data).events)


def test_truncated_record_names_record_and_offset() -> None:
    data = AGILE.read_bytes()
    log = parse_log(data)
    last = log.events[-1]
    with pytest.raises(TruncatedEventLogError) as info:
        parse_log(data[:-3])
    assert info.value.event_index == last.index
    assert info.value.offset is not None and info.value.offset >= last.offset
    assert f"event {last.index}" in str(info.value)


def test_log_size_limit() -> None:
    data = AGILE.read_bytes()
    with pytest.raises(EventLogLimitError):
        parse_log(data, limits=Limits(max_log_size=len(data) - 1))
    assert parse_log(data, limits=Limits(max_log_size=len(data))).events


def test_event_count_limit() -> None:
    data = AGILE.read_bytes()
    with pytest.raises(EventLogLimitError) as info:
        parse_log(data, limits=Limits(max_event_count=5))
    assert info.value.event_index == 5


def test_event_size_limit() -> None:
    data = SHA1.read_bytes()
    biggest = max(len(e.data) for e in parse_log(data).events)
    with pytest.raises(EventLogLimitError):
        parse_log(data, limits=Limits(max_event_data_size=biggest - 1))


def test_huge_declared_event_size_does_not_allocate() -> None:
    # A header claiming a 4 GiB event: refused by size checks, never allocated.
    data = AGILE.read_bytes()
    rec = struct.pack("<III", 4, 5, 1) + b"\x04\x00" + bytes(20) + struct.pack("<I", 0xFFFFFFF0)
    log = parse_log(data)
    if len(log.algorithms) == 1:
        with pytest.raises(EventLogError):
            parse_log(data + rec)
    else:
        with pytest.raises(EventLogError):
            parse_log(data + rec + b"\x01" * 8)


def test_pcr_index_out_of_range_is_an_error() -> None:
    data = bytearray(SHA1.read_bytes())
    log = parse_log(bytes(data))
    second = log.events[1].offset
    data[second : second + 4] = struct.pack("<I", 99)
    with pytest.raises(EventLogError) as info:
        parse_log(bytes(data))
    assert info.value.event_index == 1 and info.value.offset == second


def test_digest_not_declared_in_spec_id_is_an_error() -> None:
    data = bytearray(AGILE.read_bytes())
    log = parse_log(bytes(data))
    ev = log.events[1]
    at = ev.offset + 12  # first TPMT_HA.hashAlg
    data[at : at + 2] = b"\x99\x00"
    with pytest.raises(EventLogError) as info:
        parse_log(bytes(data))
    assert info.value.event_index == 1
    assert "not declared in the Spec ID" in str(info.value)


def test_formats_and_types() -> None:
    assert parse_log(AGILE.read_bytes()).format is LogFormat.TCG2
    assert parse_log(SHA1.read_bytes()).format is LogFormat.TCG1
    assert event_type_name(EventType.EV_EFI_SPDM_DEVICE_AUTHORITY) == "EV_EFI_SPDM_DEVICE_AUTHORITY"
    assert event_type_name(0x1234) == "0x00001234"


def test_many_zero_type_records_then_garbage_is_linear() -> None:
    # 50 000 EV_PREBOOT_CERT records in PCR 0 (zero type and index, like padding
    # would be) then a stray byte: framed once, rejected at the tail. A quadratic
    # "is the rest padding?" scan would take minutes here.
    rec = struct.pack("<II20sI", 0, 0, b"\x01" * 20, 0)
    blob = rec * 50_000 + b"\x01"
    with pytest.raises(TruncatedEventLogError) as info:
        parse_log(blob)
    assert info.value.event_index == 50_000
    assert len(parse_log(rec * 50_000 + b"\x00" * 64).events) == 50_000
