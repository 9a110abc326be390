"""``bootwatch log`` through a real subprocess: exit codes, JSON shapes, stderr lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SHARED = Path(
    os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared")
).resolve()
LOGS = SHARED / "corpus" / "eventlogs"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "log", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_replay_json_shape_is_exact() -> None:
    proc = _run("replay", str(LOGS / "go-tpm-tools/glinux-alex.bin"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc) == ["format", "algorithms", "events", "pcrs", "findings"]
    assert doc["format"] == "tcg2"
    assert doc["algorithms"] == ["sha1", "sha256"]
    assert doc["events"] == 29
    expected = json.loads((LOGS / "go-tpm-tools/glinux-alex.bin.expected.json").read_text())
    for bank, values in expected["pcrs"].items():
        for pcr, value in values.items():
            assert doc["pcrs"][bank][pcr] == value
    for finding in doc["findings"]:
        assert list(finding) == ["code", "event", "message"]


def test_replay_json_of_ccel_and_sha1_logs() -> None:
    ccel = json.loads(
        _run(
            "replay",
            str(LOGS / "go-eventlog/cos-113-intel-tdx-dupe-separator-unpadded.bin"),
            "--json",
        ).stdout
    )
    assert ccel["format"] == "ccel" and ccel["algorithms"] == ["sha384"] and ccel["events"] == 44
    sha1 = json.loads(_run("replay", str(LOGS / "go-tpm-tools/debian-10.bin"), "--json").stdout)
    assert sha1["format"] == "tcg1" and sha1["events"] == 25


def test_verify_exit_codes() -> None:
    good = _run(
        "verify",
        str(LOGS / "hirs/TpmLog.bin"),
        "--expected",
        str(LOGS / "hirs/TpmLogExpectedPcrs.txt"),
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK" in good.stdout
    bad = _run(
        "verify",
        str(LOGS / "hirs/TPMLog_Altered.bin"),
        "--expected",
        str(LOGS / "hirs/TpmLogExpectedPcrs.txt"),
        "--json",
    )
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    mismatched = {r["pcr"] for r in report["results"] if r["status"] == "mismatched"}
    assert mismatched == {0, 1}


def test_verify_reports_workaround() -> None:
    proc = _run(
        "verify",
        str(LOGS / "go-attestation/ebs_event_missing_eventlog"),
        "--expected",
        str(LOGS / "go-attestation/ebs_event_missing_eventlog.expected.json"),
    )
    assert proc.returncode == 0
    assert "workaround applied: ebs_events_missing" in proc.stdout


def test_unreadable_input_is_exit_2_and_one_line() -> None:
    for name in (
        "keylime/binary_bios_measurements-bogus",
        "keylime/binary_bios_measurements-empty",
    ):
        for sub in ("show", "replay"):
            proc = _run(sub, str(LOGS / name))
            assert proc.returncode == 2
            assert "Traceback" not in proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1
            assert name in lines[0] and "byte offset 0" in lines[0]


def test_missing_file_and_bad_expected_are_exit_2(tmp_path: Path) -> None:
    proc = _run("replay", str(tmp_path / "nope.bin"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"pcrs": 3}')
    proc = _run("verify", str(LOGS / "hirs/TpmLog.bin"), "--expected", str(bad))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr


def test_show_lists_every_record() -> None:
    proc = _run("show", str(LOGS / "tpm2-tools/event-uefiaction.bin"))
    assert proc.returncode == 0, proc.stderr
    assert "EV_NO_ACTION" in proc.stdout and "EV_EFI_ACTION" in proc.stdout


def test_state_json_reads_keylime_as_secure_boot_disabled() -> None:
    proc = _run("state", str(LOGS / "keylime/binary_bios_measurements"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["secure_boot"] is False
    text = _run("state", str(LOGS / "keylime/binary_bios_measurements"))
    assert text.returncode == 0 and "secure_boot: false" in text.stdout


def test_state_of_unreadable_log_is_exit_2() -> None:
    proc = _run("state", str(LOGS / "keylime/binary_bios_measurements-empty"), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
