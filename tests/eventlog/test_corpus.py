"""Table tests over every log of the real corpus (shared/corpus/eventlogs).

Every log frames to the MANIFEST's record count, every expected-values file
beside a log replays (PCRs the sources say are not in the firmware log are
NOT_COVERED), and the special logs behave as the corpus notes describe.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from bootwatch.errors import BootwatchError, EventLogError
from bootwatch.eventlog import (
    EventType,
    LogFormat,
    PcrStatus,
    parse_expected,
    parse_log,
    replay,
    verify_pcrs,
)
from bootwatch.eventlog.errors import EmptyEventLogError, NotAnEventLogError
from bootwatch.eventlog.model import Leniency, alg_name
from bootwatch.eventlog.replay import initial_pcr_value


def _load_corpus_helper():  # type: ignore[no-untyped-def]
    name = "bootwatch_tests_eventlog_corpus"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_corpus.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


C = _load_corpus_helper()
ROWS = C.manifest_rows()
LOGS = [r for r in ROWS if r.events is not None]
PAIRS = C.expected_pairs()


def _log(path: str):  # type: ignore[no-untyped-def]
    return parse_log((C.EVENTLOGS / path).read_bytes())


def test_manifest_lists_every_file() -> None:
    on_disk = {
        str(p.relative_to(C.EVENTLOGS))
        for p in C.EVENTLOGS.rglob("*")
        if p.is_file() and p.name != "MANIFEST.md" and not p.name.endswith(".warn")
    }
    listed = {r.path for r in ROWS} | {exp for _, exp in PAIRS}
    assert on_disk == listed
    assert len(ROWS) == 53
    assert len(PAIRS) >= 30


@pytest.mark.parametrize("row", LOGS, ids=[r.path for r in LOGS])
def test_event_count_matches_manifest(row) -> None:  # type: ignore[no-untyped-def]
    log = _log(row.path)
    assert len(log.events) == row.events
    assert [e.index for e in log.events] == list(range(row.events))
    offsets = [e.offset for e in log.events]
    assert offsets == sorted(offsets) and offsets[0] == 0


@pytest.mark.parametrize("row", LOGS, ids=[r.path for r in LOGS])
def test_every_log_replays(row) -> None:  # type: ignore[no-untyped-def]
    log = _log(row.path)
    rep = replay(log)
    for alg in log.algorithms:
        for value in rep.pcrs[alg.alg_id].values():
            assert len(value) == alg.size
    # EV_NO_ACTION records are never extended.
    extended = {x.event_index for x in rep.extends}
    for ev in log.events:
        if ev.event_type == EventType.EV_NO_ACTION:
            assert ev.index not in extended


@pytest.mark.parametrize("row", LOGS, ids=[r.path for r in LOGS])
def test_replaying_one_bank_gives_that_bank_of_the_full_replay(row) -> None:  # type: ignore[no-untyped-def]
    log = _log(row.path)
    full = replay(log)
    for alg in log.algorithms:
        one = replay(log, banks=(alg.alg_id,))
        assert set(one.pcrs) == ({alg.alg_id} & set(full.pcrs))
        assert one.pcrs.get(alg.alg_id) == full.pcrs.get(alg.alg_id)
        assert one.initial.get(alg.alg_id) == full.initial.get(alg.alg_id)
        assert one.extends == full.extends
        assert (one.startup_locality, one.hcrtm) == (full.startup_locality, full.hcrtm)
        # the findings are the full replay's, less those about the other banks only
        assert set(one.findings) <= set(full.findings)
        others = {a.name for a in log.algorithms if a.alg_id != alg.alg_id}
        for f in set(full.findings) - set(one.findings):
            assert any(name in f.message for name in others), f
    assert replay(log, banks=()).pcrs == {}
    assert replay(log, banks=None) == full


@pytest.mark.parametrize(("log_path", "expected_path"), PAIRS, ids=[e for _, e in PAIRS])
def test_replay_matches_expected_values(log_path: str, expected_path: str) -> None:
    log = _log(log_path)
    expected = parse_expected((C.EVENTLOGS / expected_path).read_bytes(), name=expected_path)
    result = verify_pcrs(log, expected.values)
    allowed = C.NOT_IN_FIRMWARE_LOG.get(expected_path, set())
    sizes = {a.alg_id: a.size for a in log.algorithms}
    rep = replay(log)
    matched = 0
    for r in result.results:
        key = (alg_name(r.alg_id), r.pcr)
        assert r.status is not PcrStatus.MISMATCHED, f"{key}: {r.reason}"
        if r.status is PcrStatus.MATCHED:
            matched += 1
            assert key not in allowed
            continue
        # NOT_COVERED: either declared not in the firmware log, or the expected
        # value is simply the PCR's reset value (nothing extended it).
        if key in allowed:
            continue
        reset = initial_pcr_value(
            r.pcr, sizes[r.alg_id], locality=rep.startup_locality, hcrtm=rep.hcrtm
        )
        assert r.expected == reset, f"{key} not covered but expected a non-reset value"
    if expected.values:
        assert matched > 0
    assert result.ok


def test_tampered_hirs_log_fails_pcr0_and_pcr1_only() -> None:
    log = _log("hirs/TPMLog_Altered.bin")
    expected = parse_expected((C.EVENTLOGS / "hirs/TpmLogExpectedPcrs.txt").read_bytes())
    result = verify_pcrs(log, expected.values)
    status = {r.pcr: r.status for r in result.results}
    assert status[0] is PcrStatus.MISMATCHED
    assert status[1] is PcrStatus.MISMATCHED
    for pcr in range(2, 8):
        assert status[pcr] is PcrStatus.MATCHED
    assert not result.ok
    # PCR1's altered record no longer hashes to its digest: it is named as the suspect.
    pcr1 = next(r for r in result.results if r.pcr == 1)
    assert pcr1.suspect_event == 25
    assert any(f.code == "digest_mismatch" and f.event == 25 for f in replay(log).findings)


def test_ebs_workaround_is_named_and_only_used_when_needed() -> None:
    log = _log("go-attestation/ebs_event_missing_eventlog")
    path = "go-attestation/ebs_event_missing_eventlog.expected.json"
    expected = parse_expected((C.EVENTLOGS / path).read_bytes())
    raw = verify_pcrs(log, expected.values, workarounds=())
    assert not raw.ok
    fixed = verify_pcrs(log, expected.values)
    assert fixed.ok
    assert fixed.workarounds_applied == ("ebs_events_missing",)
    sha1_pcr5 = next(r for r in fixed.results if r.alg_id == 4 and r.pcr == 5)
    assert sha1_pcr5.workaround == "ebs_events_missing"
    # A log that matches raw never reports the workaround.
    ok = _log("go-tpm-tools/debian-10.bin")
    exp = parse_expected((C.EVENTLOGS / "go-tpm-tools/debian-10.bin.expected.json").read_bytes())
    assert verify_pcrs(ok, exp.values).workarounds_applied == ()


def test_hcrtm_starts_pcr0_at_locality_4() -> None:
    log = _log("tpm2-tss/binary_measurements_hcrtm.bin")
    rep = replay(log)
    assert rep.hcrtm
    assert rep.initial[4][0] == bytes(19) + b"\x04"
    assert [a.name for a in log.algorithms] == ["sha1", "sha256", "sm3_256"]
    assert 0x12 in rep.pcrs  # the SM3-256 bank is replayed too


def test_startup_locality_sets_pcr0() -> None:
    rep = replay(_log("go-tpm-tools/glinux-alex.bin"))
    assert rep.startup_locality == 3
    assert rep.initial[11][0] == bytes(31) + b"\x03"


def test_short_no_action_log_initialises_pcr0() -> None:
    log = _log("go-attestation/short_no_action_eventlog")
    assert log.format is LogFormat.TCG1
    assert log.spec_id is None
    rep = replay(log)
    assert rep.extends == ()
    assert rep.pcrs[4] == {0: bytes(19) + b"\x03"}


def test_option_rom_log_keeps_every_record_after_ffffffff_indices() -> None:
    log = _log("go-attestation/option_rom_eventlog")
    assert len(log.events) == 61
    assert any(e.pcr == 0xFFFFFFFF for e in log.events)
    assert log.events[-1].pcr != 0xFFFFFFFF or log.events[-1].index == 60


def test_ccel_log_is_recognised() -> None:
    log = _log("go-eventlog/cos-113-intel-tdx-dupe-separator-unpadded.bin")
    assert log.format is LogFormat.CCEL
    assert log.index_name == "MR"
    assert [a.name for a in log.algorithms] == ["sha384"]
    rep = replay(log)
    assert rep.startup_locality is None
    assert all(0 <= mr <= 4 for mr in rep.pcrs[0x0C])


def test_tpm_logs_are_not_ccel() -> None:
    for row in LOGS:
        if "intel-tdx-dupe" in row.path:
            continue
        assert _log(row.path).format is not LogFormat.CCEL, row.path


def test_specid_vendordata_needs_its_named_leniency() -> None:
    data = (C.EVENTLOGS / "tpm2-tools/specid-vendordata.bin").read_bytes()
    log = parse_log(data)
    assert log.leniencies == (Leniency.SPECID_VENDORINFO_OUTSIDE_EVENT,)
    assert log.spec_id is not None and log.spec_id.vendor_info == b"\xde\xad\xbe\xef"
    assert any(f.code == "framing_leniency" for f in replay(log).findings)
    with pytest.raises(EventLogError) as info:
        parse_log(data, leniencies=())
    assert info.value.event_index == 0
    assert "vendorInfoSize" in str(info.value)


def test_keylime_bogus_is_rejected() -> None:
    with pytest.raises(NotAnEventLogError) as info:
        _log("keylime/binary_bios_measurements-bogus")
    assert info.value.offset == 0
    assert "not a TCG event log" in str(info.value)


def test_keylime_empty_is_rejected() -> None:
    with pytest.raises(EmptyEventLogError) as info:
        _log("keylime/binary_bios_measurements-empty")
    assert "empty" in str(info.value)


def test_unknown_algorithm_in_spec_id_is_framed_by_declared_size() -> None:
    # Rewrite event.bin's Spec ID: declare sha512 (0x000D) as an unknown 0x00AA of 64 bytes.
    data = bytearray((C.EVENTLOGS / "tpm2-tools/event.bin").read_bytes())
    old = b"\x0d\x00\x40\x00"
    at = data.index(old, 32)
    data[at : at + 2] = b"\xaa\x00"
    rec = data.index(b"\x0d\x00", at + 4)
    data[rec : rec + 2] = b"\xaa\x00"
    log = parse_log(bytes(data))
    names = [a.name for a in log.algorithms]
    assert names[-1] == "alg_0x00aa"
    assert 0xAA in log.events[1].digests
    rep = replay(log)
    assert 0xAA not in rep.pcrs
    assert any(f.code == "bank_not_replayable" for f in rep.findings)


def test_all_logs_raise_only_bootwatch_errors_on_bad_headers() -> None:
    for blob in (b"\x00" * 10, b"\xff" * 40, b"\x00" * 64, b"x" * 31):
        with pytest.raises(BootwatchError):
            parse_log(blob)


def test_digest_findings_over_the_corpus() -> None:
    """Only the tampered HIRS log has a record whose digest is not its data's hash;
    shim's off-by-one authority events are named as such, not as tampering."""
    mismatched = set()
    quirk = set()
    for row in LOGS:
        for f in replay(_log(row.path)).findings:
            if f.code == "digest_mismatch":
                mismatched.add(row.path)
            elif f.code == "digest_excludes_last_byte":
                quirk.add(row.path)
    assert mismatched == {"hirs/TPMLog_Altered.bin"}
    assert "go-attestation/sb_cert_eventlog" in quirk
