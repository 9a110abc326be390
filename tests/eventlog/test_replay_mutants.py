"""Replay rules pinned on crafted logs (issue 17).

Every log here is written byte by byte (TCG PC Client PFP 10.2: a TCG_PCR_EVENT header
carrying the Spec ID Event03, then TCG_PCR_EVENT2 records) and every expected PCR value is
computed here with hashlib from the PFP's rules, so a replay that starts PCR 0 from the
wrong value, stops early, or extends what it must not is caught.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from bootwatch.eventlog import LogFormat, parse_log, replay
from bootwatch.eventlog.model import EventType
from bootwatch.eventlog.replay import (
    STARTUP_LOCALITY_SIGNATURE,
    hash_function,
    initial_pcr_value,
)

SHA1, SHA256, SHA384 = 0x0004, 0x000B, 0x000C
NO_ACTION = int(EventType.EV_NO_ACTION)
SEPARATOR = int(EventType.EV_SEPARATOR)
POST_CODE = int(EventType.EV_POST_CODE)
HCRTM = int(EventType.EV_EFI_HCRTM_EVENT)
VAR_BOOT = int(EventType.EV_EFI_VARIABLE_BOOT)
VAR_AUTH = int(EventType.EV_EFI_VARIABLE_AUTHORITY)
EVENT_TAG = int(EventType.EV_EVENT_TAG)
SIZES = {SHA1: 20, SHA256: 32, SHA384: 48}
H = {SHA1: hashlib.sha1, SHA256: hashlib.sha256, SHA384: hashlib.sha384}


def spec_id_header(algs: tuple[int, ...] = (SHA1, SHA256), pcr: int = 0) -> bytes:
    body = (STARTUP_LOCALITY_SIGNATURE[:0] + b"Spec ID Event03\x00"
            + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
            + b"".join(struct.pack("<HH", a, SIZES[a]) for a in algs) + b"\x00")
    return struct.pack("<II20sI", pcr, NO_ACTION, bytes(20), len(body)) + body


def record(pcr: int, etype: int, data: bytes, digests: dict[int, bytes]) -> bytes:
    out = struct.pack("<III", pcr, etype, len(digests))
    for alg, d in digests.items():
        out += struct.pack("<H", alg) + d
    return out + struct.pack("<I", len(data)) + data


def measured(pcr: int, etype: int, data: bytes, algs: tuple[int, ...] = (SHA1, SHA256)) -> bytes:
    """A record whose digests are the hashes of its data."""
    return record(pcr, etype, data, {a: H[a](data).digest() for a in algs})


def no_action(pcr: int, data: bytes, algs: tuple[int, ...] = (SHA1, SHA256),
              fill: int = 0) -> bytes:
    return record(pcr, NO_ACTION, data, {a: bytes([fill]) * SIZES[a] for a in algs})


def locality_event(loc: int, pcr: int = 0, extra: bytes = b"") -> bytes:
    return no_action(pcr, STARTUP_LOCALITY_SIGNATURE + bytes([loc]) + extra)


def ext(start: bytes, *datas: bytes, alg: int = SHA256) -> bytes:
    v = start
    for d in datas:
        v = H[alg](v + H[alg](d).digest()).digest()
    return v


def codes(rep, code: str) -> list[int | None]:  # type: ignore[no-untyped-def]
    return [f.event for f in rep.findings if f.code == code]


LOC3 = bytes(31) + b"\x03"
ZERO = bytes(32)


def test_startup_locality_sets_pcr0_start() -> None:
    rep = replay(parse_log(spec_id_header() + locality_event(3) + measured(0, POST_CODE, b"a")))
    assert rep.startup_locality == 3
    assert rep.pcrs[SHA256][0] == ext(LOC3, b"a")
    assert rep.initial[SHA256][0] == LOC3
    assert rep.pcrs[SHA1][0] == ext(bytes(19) + b"\x03", b"a", alg=SHA1)
    assert rep.findings == ()


def test_startup_locality_alone_still_initialises_pcr0() -> None:
    rep = replay(parse_log(spec_id_header() + locality_event(3) + measured(1, POST_CODE, b"a")))
    assert rep.pcrs[SHA256][0] == LOC3 and rep.initial[SHA256][0] == LOC3
    assert rep.pcrs[SHA256][1] == ext(ZERO, b"a")


@pytest.mark.parametrize(
    ("event", "length"),
    [(locality_event(3, pcr=1), 17), (locality_event(3, extra=b"\x00"), 18),
     (no_action(0, STARTUP_LOCALITY_SIGNATURE), 16)],
    ids=["wrong-pcr", "too-long", "too-short"],
)
def test_malformed_startup_locality_changes_nothing(event: bytes, length: int) -> None:
    rep = replay(parse_log(spec_id_header() + event + measured(0, POST_CODE, b"a")))
    assert rep.startup_locality is None
    assert rep.pcrs[SHA256][0] == ext(ZERO, b"a")
    assert rep.initial[SHA256][0] == ZERO
    assert codes(rep, "startup_locality_malformed") == [1]
    msg = next(f.message for f in rep.findings)
    assert f"with {length} data bytes" in msg and "PCR 0 and 17 bytes expected" in msg


def test_startup_locality_after_pcr0_was_extended_is_ignored() -> None:
    rep = replay(parse_log(spec_id_header() + measured(0, POST_CODE, b"a") + locality_event(3)
                           + measured(0, POST_CODE, b"b")))
    assert rep.startup_locality is None
    assert rep.pcrs[SHA256][0] == ext(ZERO, b"a", b"b")
    assert codes(rep, "startup_locality_late") == [2]


def test_startup_locality_after_another_pcr_still_counts() -> None:
    rep = replay(parse_log(spec_id_header() + measured(1, POST_CODE, b"x") + locality_event(3)
                           + measured(0, POST_CODE, b"a")))
    assert rep.startup_locality == 3
    assert rep.pcrs[SHA256][0] == ext(LOC3, b"a")


def test_startup_locality_in_ccel_log_is_not_a_locality() -> None:
    rep = replay(parse_log(spec_id_header(pcr=1) + locality_event(3)
                           + measured(1, POST_CODE, b"a")))
    assert rep.startup_locality is None and rep.findings == ()


def test_hcrtm_event_starts_pcr0_at_four() -> None:
    rep = replay(parse_log(spec_id_header() + measured(0, HCRTM, b"HCRTM")
                           + measured(0, POST_CODE, b"a")))
    assert rep.hcrtm is True
    assert rep.pcrs[SHA256][0] == ext(bytes(31) + b"\x04", b"HCRTM", b"a")
    # an H-CRTM event in another PCR says nothing about PCR 0
    rep = replay(parse_log(spec_id_header() + measured(1, HCRTM, b"HCRTM")
                           + measured(0, POST_CODE, b"a")))
    assert rep.hcrtm is False and rep.pcrs[SHA256][0] == ext(ZERO, b"a")


def test_records_past_pcr_23_are_skipped_and_replay_goes_on() -> None:
    log = parse_log(spec_id_header() + measured(23, POST_CODE, b"p23")
                    + measured(24, POST_CODE, b"p24") + measured(31, POST_CODE, b"p31")
                    + measured(0, POST_CODE, b"a") + measured(7, SEPARATOR, bytes(4)))
    rep = replay(log)
    assert codes(rep, "pcr_index_not_extended") == [2, 3]
    assert "names index 0x18, which is no PCR" in rep.findings[0].message
    assert sorted(rep.pcrs[SHA256]) == [0, 7, 23]
    assert rep.pcrs[SHA256][23] == ext(ZERO, b"p23")
    assert rep.pcrs[SHA256][0] == ext(ZERO, b"a")
    assert rep.pcrs[SHA256][7] == ext(ZERO, bytes(4))
    assert [e.event_index for e in rep.extends] == [1, 4, 5]


def test_ffffffff_index_records_are_not_extended() -> None:
    rep = replay(parse_log(spec_id_header() + measured(0xFFFFFFFF, POST_CODE, b"rom")
                           + measured(0, POST_CODE, b"a")))
    assert codes(rep, "pcr_index_not_extended") == [1]
    assert rep.pcrs[SHA256] == {0: ext(ZERO, b"a")}


@pytest.mark.parametrize("pcr", [16, 17, 22, 23])
def test_reset_values_of_high_pcrs(pcr: int) -> None:
    rep = replay(parse_log(spec_id_header() + measured(pcr, POST_CODE, b"d")))
    start = b"\xff" * 32 if 17 <= pcr <= 22 else ZERO
    assert rep.initial[SHA256][pcr] == start
    assert rep.pcrs[SHA256][pcr] == ext(start, b"d")


def test_initial_pcr_value_rules() -> None:
    assert initial_pcr_value(0, 32, locality=None, hcrtm=False) == ZERO
    assert initial_pcr_value(0, 20, locality=3, hcrtm=False) == bytes(19) + b"\x03"
    assert initial_pcr_value(0, 32, locality=3, hcrtm=True) == bytes(31) + b"\x04"
    assert initial_pcr_value(0, 32, locality=3, hcrtm=False, ccel=True) == ZERO
    assert initial_pcr_value(17, 48, locality=None, hcrtm=False) == b"\xff" * 48
    assert initial_pcr_value(18, 32, locality=None, hcrtm=False, ccel=True) == ZERO
    assert initial_pcr_value(1, 32, locality=3, hcrtm=True) == ZERO


def test_no_action_digest_not_zero_is_reported_once_and_not_extended() -> None:
    rep = replay(parse_log(spec_id_header() + no_action(0, b"note", fill=1)
                           + no_action(5, b"note2") + measured(0, POST_CODE, b"a")))
    assert codes(rep, "no_action_digest_not_zero") == [1]
    assert "non-zero sha1 digest" in rep.findings[0].message
    assert rep.pcrs[SHA256] == {0: ext(ZERO, b"a")}
    one = record(0, NO_ACTION, b"x", {SHA1: bytes(20), SHA256: b"\x00" * 31 + b"\x01"})
    rep = replay(parse_log(spec_id_header() + one))
    assert codes(rep, "no_action_digest_not_zero") == [1]
    assert "sha256" in rep.findings[0].message


def test_separator_digest_mismatch_is_a_finding_per_bank() -> None:
    bad = record(7, SEPARATOR, bytes(4), {SHA1: hashlib.sha1(bytes(4)).digest(),
                                          SHA256: hashlib.sha256(b"\xff" * 4).digest()})
    rep = replay(parse_log(spec_id_header() + measured(7, SEPARATOR, bytes(4)) + bad))
    assert codes(rep, "digest_mismatch") == [2]
    assert "the sha256 digest is not the hash" in rep.findings[0].message
    # still replayed as the TPM saw it
    assert rep.pcrs[SHA256][7] == hashlib.sha256(
        ext(ZERO, bytes(4)) + hashlib.sha256(b"\xff" * 4).digest()).digest()


def _variable(name: str, value: bytes) -> bytes:
    n = name.encode("utf-16-le")
    return b"\x61" * 16 + struct.pack("<QQ", len(name), len(value)) + n + value


def test_variable_boot_digest_of_variable_data_is_accepted() -> None:
    data = _variable("Boot0001", b"\x01\x02\x03")
    only_value = record(1, VAR_BOOT, data, {a: H[a](b"\x01\x02\x03").digest()
                                            for a in (SHA1, SHA256)})
    rep = replay(parse_log(spec_id_header() + only_value + measured(1, VAR_BOOT, data)))
    assert rep.findings == ()
    # a header whose lengths run past the data frames nothing: a mismatch
    short = data[:-1]
    rep = replay(parse_log(spec_id_header() + record(1, VAR_BOOT, short,
                                                     {a: H[a](b"\x01\x02\x03").digest()
                                                      for a in (SHA1, SHA256)})))
    assert codes(rep, "digest_mismatch") == [1, 1]


def test_variable_header_exactly_framing_its_data() -> None:
    data = _variable("A", b"")
    rep = replay(parse_log(spec_id_header() + record(1, VAR_BOOT, data,
                                                     {a: H[a](b"").digest()
                                                      for a in (SHA1, SHA256)})))
    assert rep.findings == ()
    too_short = b"\x61" * 31
    rep = replay(parse_log(spec_id_header() + record(1, VAR_BOOT, too_short,
                                                     {a: H[a](b"").digest()
                                                      for a in (SHA1, SHA256)})))
    assert codes(rep, "digest_mismatch") == [1, 1]


def test_digest_excluding_last_byte_is_a_named_finding() -> None:
    data = _variable("Shim", b"CERT") + b"\x00"
    rec = record(7, VAR_AUTH, data, {a: H[a](data[:-1]).digest() for a in (SHA1, SHA256)})
    rep = replay(parse_log(spec_id_header() + rec))
    assert codes(rep, "digest_excludes_last_byte") == [1, 1]
    assert "all but the last byte" in rep.findings[0].message
    # not for other event types: there it is a plain mismatch
    rec = record(7, SEPARATOR, b"\x00\x00\x00\x00\x01",
                 {a: H[a](bytes(4)).digest() for a in (SHA1, SHA256)})
    rep = replay(parse_log(spec_id_header() + rec))
    assert codes(rep, "digest_mismatch") == [1, 1]


def test_event_tag_data_is_not_checked_by_the_replay() -> None:
    rec = record(9, EVENT_TAG, b"initrd", {a: H[a](b"other").digest() for a in (SHA1, SHA256)})
    assert replay(parse_log(spec_id_header() + rec)).findings == ()


def test_record_missing_a_bank_is_skipped_in_that_bank_only() -> None:
    partial = record(3, POST_CODE, b"p", {SHA1: hashlib.sha1(b"p").digest()})
    rep = replay(parse_log(spec_id_header() + partial + measured(3, POST_CODE, b"q")))
    assert codes(rep, "digest_missing") == [1]
    assert "no sha256 digest" in rep.findings[0].message
    assert rep.pcrs[SHA256][3] == ext(ZERO, b"q")
    assert rep.pcrs[SHA1][3] == ext(bytes(20), b"p", b"q", alg=SHA1)


def test_banks_limit_the_replay() -> None:
    log = parse_log(spec_id_header((SHA1, SHA256, SHA384)) + measured(
        4, SEPARATOR, b"zz", (SHA1, SHA256, SHA384)))
    rep = replay(log, banks=(SHA256,))
    assert set(rep.pcrs) == {SHA256} and set(rep.initial) == {SHA256}
    assert replay(log, banks=(0x0012,)).pcrs == {}
    full = replay(log)
    assert set(full.pcrs) == {SHA1, SHA256, SHA384}
    assert full.pcrs[SHA384][4] == ext(bytes(48), b"zz", alg=SHA384)


def test_hash_function_names() -> None:
    fn = hash_function(SHA256)
    assert fn is not None and fn(b"x").digest() == hashlib.sha256(b"x").digest()
    assert hash_function(0x7777) is None
    sm3 = hash_function(0x0012)  # not a hashlib attribute: through hashlib.new, if OpenSSL has it
    try:
        want = hashlib.new("sm3", b"x").digest()
    except ValueError:
        assert sm3 is None
    else:
        assert sm3 is not None and sm3(b"x").digest() == want


def test_ccel_log_replays_from_zero() -> None:
    log = parse_log(spec_id_header(pcr=1) + measured(1, POST_CODE, b"a")
                    + measured(0, HCRTM, b"h"))
    assert log.format is LogFormat.CCEL
    rep = replay(log)
    assert rep.pcrs[SHA256][1] == ext(ZERO, b"a")
    assert rep.pcrs[SHA256][0] == ext(ZERO, b"h")


def test_messages_in_full() -> None:
    rep = replay(parse_log(spec_id_header() + measured(0, POST_CODE, b"a") + locality_event(3)))
    assert rep.findings[0].message == "StartupLocality event after PCR0 was extended; ignored"
    rep = replay(parse_log(spec_id_header() + no_action(0, b"x", fill=1)))
    assert rep.findings[0].message == (
        "EV_NO_ACTION record carries a non-zero sha1 digest (not extended)")
    bad = record(7, SEPARATOR, bytes(4), {SHA1: bytes(20), SHA256: bytes(32)})
    rep = replay(parse_log(spec_id_header() + bad))
    assert [f.message for f in rep.findings] == [
        "EV_SEPARATOR: the sha1 digest is not the hash of the event data",
        "EV_SEPARATOR: the sha256 digest is not the hash of the event data"]


def test_header_digest_is_not_judged() -> None:
    # the Spec ID header is an EV_NO_ACTION too; its (SHA-1 format) digest is not a finding
    data = bytearray(spec_id_header() + measured(0, POST_CODE, b"a"))
    data[8:28] = b"\x01" * 20
    rep = replay(parse_log(bytes(data)))
    assert rep.findings == ()


def test_leniency_and_unreplayable_bank_findings() -> None:
    body = (b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 1)
            + struct.pack("<HH", SHA256, 32) + b"\x03abc")
    data = struct.pack("<II20sI", 0, NO_ACTION, bytes(20), len(body) - 3) + body
    rep = replay(parse_log(data + measured(0, POST_CODE, b"a", (SHA256,))))
    assert rep.findings[0] == rep.findings[0].__class__(
        "framing_leniency", 0,
        "the log needed the named leniency 'specid_vendorinfo_outside_event' to be framed")
    body = (b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 2)
            + struct.pack("<HHHH", SHA256, 32, 0x7777, 5) + b"\x00")
    rec = (struct.pack("<III", 0, POST_CODE, 2) + struct.pack("<H", SHA256)
           + hashlib.sha256(b"a").digest() + struct.pack("<H", 0x7777) + bytes(5)
           + struct.pack("<I", 1) + b"a")
    rep = replay(parse_log(struct.pack("<II20sI", 0, NO_ACTION, bytes(20), len(body)) + body
                           + rec))
    assert [(f.code, f.event) for f in rep.findings] == [("bank_not_replayable", None)]
    assert rep.findings[0].message.endswith(
        "bank cannot be replayed: no implementation of that digest algorithm")
    assert set(rep.pcrs) == {SHA256}


def test_variable_of_exactly_a_header() -> None:
    data = b"\x61" * 16 + struct.pack("<QQ", 0, 0)  # 32 bytes: no name, no value
    rec = record(1, VAR_BOOT, data, {a: H[a](b"").digest() for a in (SHA1, SHA256)})
    assert replay(parse_log(spec_id_header() + rec)).findings == ()


def test_variable_whose_length_runs_past_its_data() -> None:
    # VariableLength says 3, two bytes are there: the digest of those two is no match
    data = b"\x61" * 16 + struct.pack("<QQ", 1, 3) + "A".encode("utf-16-le") + b"\x01\x02"
    rec = record(1, VAR_BOOT, data, {a: H[a](b"\x01\x02").digest() for a in (SHA1, SHA256)})
    rep = replay(parse_log(spec_id_header() + rec))
    assert codes(rep, "digest_mismatch") == [1, 1]


def test_every_bank_of_a_variable_event_is_judged() -> None:
    data = _variable("Boot0001", b"\x01\x02\x03")
    rec = record(1, VAR_BOOT, data, {SHA1: hashlib.sha1(b"\x01\x02\x03").digest(),
                                     SHA256: hashlib.sha256(b"other").digest()})
    rep = replay(parse_log(spec_id_header() + rec))
    assert [(f.code, "sha256" in f.message) for f in rep.findings] == [("digest_mismatch", True)]
    data = _variable("Shim", b"CERT") + b"\x00"
    rec = record(7, VAR_AUTH, data, {SHA1: hashlib.sha1(data[:-1]).digest(),
                                     SHA256: hashlib.sha256(b"junk").digest()})
    rep = replay(parse_log(spec_id_header() + rec))
    assert [f.code for f in rep.findings] == ["digest_excludes_last_byte", "digest_mismatch"]


def test_cc_event_log_high_indices_start_at_zero() -> None:
    rep = replay(parse_log(spec_id_header(pcr=1) + measured(17, POST_CODE, b"a")))
    assert rep.initial[SHA256][17] == ZERO
    assert rep.pcrs[SHA256][17] == ext(ZERO, b"a")
