"""verify_pcrs: statuses, suspects and reasons on real logs with known edits."""

from __future__ import annotations

import os
from pathlib import Path

from bootwatch.eventlog import PcrStatus, parse_log, replay, verify_pcrs
from bootwatch.eventlog.model import EventType, HashAlg

SHARED = Path(
    os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared")
).resolve()
LOGS = SHARED / "corpus" / "eventlogs"


def _without_record(data: bytes, index: int) -> bytes:
    log = parse_log(data)
    start = log.events[index].offset
    end = log.events[index + 1].offset if index + 1 < len(log.events) else len(data)
    return data[:start] + data[end:]


def test_suspect_is_the_record_whose_removal_explains_the_mismatch() -> None:
    data = (LOGS / "go-tpm-tools/glinux-alex.bin").read_bytes()
    log = parse_log(data)
    target = next(
        e for e in log.events if e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION
    )
    # What a TPM would hold had the application not been loaded: the log now has one more.
    expected = replay(parse_log(_without_record(data, target.index))).pcrs
    result = verify_pcrs(log, expected)
    bad = [r for r in result.results if r.status is PcrStatus.MISMATCHED]
    assert {r.pcr for r in bad} == {target.pcr}
    for r in bad:
        assert r.suspect_event == target.index
        assert f"event {target.index} is removed" in r.reason
    assert not result.ok


def test_not_covered_reasons() -> None:
    log = parse_log((LOGS / "go-tpm-tools/debian-10.bin").read_bytes())  # SHA-1 format
    expected = {
        HashAlg.SHA1: {10: bytes(20), 0: replay(log).pcrs[HashAlg.SHA1][0]},
        HashAlg.SHA256: {0: bytes(32)},
    }
    result = verify_pcrs(log, expected)
    by_key = {(r.alg_id, r.pcr): r for r in result.results}
    assert by_key[(HashAlg.SHA1, 0)].status is PcrStatus.MATCHED
    assert by_key[(HashAlg.SHA1, 10)].status is PcrStatus.NOT_COVERED
    assert "never extends" in by_key[(HashAlg.SHA1, 10)].reason
    assert by_key[(HashAlg.SHA256, 0)].status is PcrStatus.NOT_COVERED
    assert "no sha256 bank" in by_key[(HashAlg.SHA256, 0)].reason
    assert result.ok


def test_ccel_registers_verify_against_their_own_replay() -> None:
    log = parse_log(
        (LOGS / "go-eventlog/cos-113-intel-tdx-dupe-separator-unpadded.bin").read_bytes()
    )
    rep = replay(log)
    assert verify_pcrs(log, rep.pcrs, replayed=rep).ok
    flipped = {
        alg: {mr: bytes([v[0] ^ 1]) + v[1:] for mr, v in bank.items()}
        for alg, bank in rep.pcrs.items()
    }
    result = verify_pcrs(log, flipped, replayed=rep)
    assert all(r.status is PcrStatus.MISMATCHED for r in result.results)
    assert not result.ok
    assert {r.pcr for r in result.results} == set(rep.pcrs[HashAlg.SHA384])


def test_wrong_length_expected_value_is_a_mismatch_not_a_crash() -> None:
    log = parse_log((LOGS / "go-tpm-tools/debian-10.bin").read_bytes())
    result = verify_pcrs(log, {HashAlg.SHA1: {0: b"\x00" * 5}})
    assert result.results[0].status is PcrStatus.MISMATCHED
    assert "5 bytes" in result.results[0].reason
