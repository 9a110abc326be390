"""Revocation against Microsoft's real DBX data (read in place from shared/corpus/secureboot)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootwatch.errors import BootwatchError
from bootwatch.eventlog import parse_log
from bootwatch.eventlog.dbx import (
    DbxDataError,
    load_dbx_json,
    load_dbx_update,
    merge_catalogs,
)
from bootwatch.eventlog.revocation import RevokedKind, check_revocation
from bootwatch.eventlog.state import extract_boot_state

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
EVENTLOGS = SHARED / "corpus" / "eventlogs"
SECUREBOOT = SHARED / "corpus" / "secureboot"

JSON = load_dbx_json((SECUREBOOT / "dbx_info_msft_latest.json").read_bytes())
UPDATE = load_dbx_update((SECUREBOOT / "DBXUpdate_amd64.bin").read_bytes())
OPTIONAL = load_dbx_update((SECUREBOOT / "DBXUpdate2024_optional.bin").read_bytes())
CATALOG = merge_catalogs(JSON, UPDATE, OPTIONAL)
PCA_2011 = "580a6f4cc4e4b669b9ebdc1b2b3e087b80d0678d"


def _report(rel: str):  # type: ignore[no-untyped-def]
    return check_revocation(extract_boot_state(parse_log((EVENTLOGS / rel).read_bytes())), CATALOG)


def test_dbx_files_agree() -> None:
    assert len(UPDATE.image_hashes("x64")) == 443
    assert UPDATE.image_hashes("x64") == JSON.image_hashes("x64")
    assert [c.sha1_thumbprint for c in JSON.certificates] == [PCA_2011]
    assert [c.sha1_thumbprint for c in OPTIONAL.certificates] == [PCA_2011]
    assert OPTIONAL.certificates[0].subject == "Microsoft Windows Production PCA 2011"
    # SVN records are not image hashes: none of the optional update's SHA-256 entries count
    assert OPTIONAL.images == {} and len(OPTIONAL.svn_records) == 3
    assert len(JSON.svn_records) == 3
    # every SVN record starts with 0x01 then the DBXSVN GUID: none is an image hash
    assert all(s.startswith("01") for s in CATALOG.svn_records)
    assert not set(CATALOG.svn_records) & set(CATALOG.images)


def test_log_without_dbx_lacks_every_current_revocation() -> None:
    r = _report("go-tpm-tools/ubuntu-2104-no-dbx.bin")
    assert r.dbx_measured
    assert r.current_revocations == 444  # 443 x64 image hashes + the PCA 2011 certificate
    assert len(r.missing_revocations) == 444
    msg = next(f.message for f in r.findings if f.code == "dbx_outdated")
    assert msg.startswith("measured dbx lacks 444 of the 444 current revocations")
    assert f"{len(CATALOG.svn_records)} SVN records excluded" in msg
    assert r.svn_records_excluded == len(CATALOG.svn_records) > 0
    assert len(r.missing_image_hashes) == 443
    assert r.missing_certificates == ("580a6f4cc4e4b669b9ebdc1b2b3e087b80d0678d",)
    assert "443 of 443 x64 image hashes and 1 of 1 certificates" in msg
    assert "Microsoft Windows Production PCA 2011" in msg
    assert not r.ok


def test_partial_dbx_counts_what_it_has() -> None:
    r = _report("keylime/binary_bios_measurements")
    assert 0 < len(r.missing_revocations) < r.current_revocations


def test_revoked_authority_pca_2011() -> None:
    r = _report("go-attestation/option_rom_eventlog")
    kinds = [(c.kind, c.identifier) for c in r.revoked_loaded]
    assert (RevokedKind.AUTHORITY_CERTIFICATE, PCA_2011) in kinds
    assert any(
        f.code == "revoked_component_loaded" and "revoked boot component loaded" in f.message
        for f in r.findings
    )


def test_revoked_shim_image_loaded() -> None:
    r = _report("go-tpm-tools/rhel8-uefi.bin")
    images = [c for c in r.revoked_loaded if c.kind is RevokedKind.IMAGE]
    assert images and images[0].name == "rhel-8.3-20200917-shim64-bit.efi"
    assert (
        images[0].event
        == extract_boot_state(parse_log((EVENTLOGS / "go-tpm-tools/rhel8-uefi.bin").read_bytes()))
        .boot_applications[0]
        .event
    )


def test_clean_boot_has_no_revoked_component() -> None:
    assert _report("go-tpm-tools/cos-101-amd-sev.bin").revoked_loaded == ()


def test_sha1_log_applications_are_unchecked() -> None:
    r = _report("go-tpm-tools/debian-10.bin")
    assert r.unchecked_applications
    assert any(f.code == "revocation_unchecked" for f in r.findings)


def test_log_without_dbx_event() -> None:
    r = _report("tpmtool/binary_bios_measurements_tpm12_bios")
    assert not r.dbx_measured and any(f.code == "dbx_not_measured" for f in r.findings)


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[]", b'{"images": {"x64": [{"authenticodeHash": "zz"}]}}']
)
def test_bad_json_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(DbxDataError):
        load_dbx_json(data)


@pytest.mark.parametrize("cut", [0, 10, 40, 3000, 5000])
def test_bad_update_is_a_typed_error(cut: int) -> None:
    raw = (SECUREBOOT / "DBXUpdate2024_optional.bin").read_bytes()
    with pytest.raises(BootwatchError):
        load_dbx_update(raw[:cut] if cut < 5000 else raw[:-7])


def test_cli_log_state_with_dbx_reports_the_revoked_shim() -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "log", "state",
         str(EVENTLOGS / "go-tpm-tools/rhel8-uefi.bin"), "--json",
         "--dbx", str(SECUREBOOT / "DBXUpdate_amd64.bin"),
         "--dbx", str(SECUREBOOT / "DBXUpdate2024_optional.bin")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1, proc.stderr  # a revoked component was loaded
    rev = json.loads(proc.stdout)["revocation"]
    assert not rev["ok"]
    [shim] = rev["revoked_loaded"]
    assert shim["kind"] == "image" and shim["event"] == 23
    assert rev["missing_certificates"] == ["580a6f4cc4e4b669b9ebdc1b2b3e087b80d0678d"]
    assert any(f["code"] == "dbx_outdated" for f in rev["findings"])


def test_cli_log_state_human_output_leads_with_the_revoked_shim() -> None:
    """Piped (not a terminal), the report comes first, whole, and the exit code is 1."""
    import subprocess
    import sys

    def state(log: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bootwatch.cli.main", "log", "state",
             str(EVENTLOGS / log), "--dbx", str(SECUREBOOT / "dbx_info_msft_latest.json")],
            capture_output=True, text=True,
        )

    proc = state("go-tpm-tools/rhel8-uefi.bin")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "REVOKED BOOT COMPONENT LOADED (1):"
    assert lines[1].startswith("  event 23: image rhel-8.3-20200917-shim64-bit.efi (40d6cae0")
    assert lines[1].endswith("CVE-2021-20225; CVE-2021-20233")  # the whole reason, not cut
    assert any("lacks 261 of the 444 current revocations" in line for line in lines)
    assert "console=ttyS0,38400n8" in proc.stdout  # the kernel command line is whole
    elided = [line for line in lines if "..." in line]
    assert elided == ["  ... 178 more (see --json)"]  # only the explicit "more" line
    clean = state("go-tpm-tools/cos-101-amd-sev.bin")
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.startswith("revocation: no loaded boot component is revoked")
