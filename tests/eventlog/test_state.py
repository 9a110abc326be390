"""Boot state over the real corpus (read in place), table-driven from MANIFEST.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bootwatch.eventlog import parse_log
from bootwatch.eventlog.model import alg_from_name
from bootwatch.eventlog.state import boot_state_to_json, extract_boot_state

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
EVENTLOGS = SHARED / "corpus" / "eventlogs"


def _manifest_secure_boot() -> list[tuple[str, bool | None]]:
    """(log, expected secure_boot) for each MANIFEST row whose notes state the SecureBoot var."""
    rows = []
    for line in (EVENTLOGS / "MANIFEST.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        notes = cells[9]
        if "SecureBoot var=1" in notes:
            rows.append((cells[0].strip("`"), True))
        elif "SecureBoot var=0" in notes:
            rows.append((cells[0].strip("`"), False))
        elif "SecureBoot var has 0-length data" in notes:
            rows.append((cells[0].strip("`"), None))
    return rows


SECURE_BOOT = _manifest_secure_boot()


def _state(rel: str):  # type: ignore[no-untyped-def]
    return extract_boot_state(parse_log((EVENTLOGS / rel).read_bytes()))


def test_manifest_table_read() -> None:
    assert len(SECURE_BOOT) >= 40
    assert sum(1 for _, sb in SECURE_BOOT if sb is None) == 5


@pytest.mark.parametrize(("rel", "expected"), SECURE_BOOT)
def test_secure_boot_matches_manifest(rel: str, expected: bool | None) -> None:
    state = _state(rel)
    assert state.secure_boot is expected
    codes = [f.code for f in state.findings]
    if expected is None:
        assert "secureboot_empty" in codes
    else:
        assert "secureboot_empty" not in codes
    doc = boot_state_to_json(state)
    assert doc["secure_boot"] is expected
    json.dumps(doc)


def test_keylime_log_is_secure_boot_disabled() -> None:
    assert _state("keylime/binary_bios_measurements").secure_boot is False


def test_log_without_secureboot_variable_is_unknown_with_finding() -> None:
    state = _state("tpmtool/binary_bios_measurements_tpm12_bios")
    assert state.secure_boot is None
    assert [f.code for f in state.findings] == ["secureboot_not_measured"]


def _expected_app_digests() -> list[tuple[str, dict[str, list[str]]]]:
    out = []
    for exp in sorted(EVENTLOGS.glob("go-tpm-tools/*.expected.json")):
        doc = json.loads(exp.read_text())
        if doc.get("expected_efi_app_digests"):
            out.append(
                (
                    f"go-tpm-tools/{exp.name.removesuffix('.expected.json')}",
                    doc["expected_efi_app_digests"],
                )
            )
    return out


APP_DIGESTS = _expected_app_digests()


def test_app_digest_table_read() -> None:
    assert len(APP_DIGESTS) >= 8


@pytest.mark.parametrize(("rel", "banks"), APP_DIGESTS)
def test_boot_application_digests_match_go_tpm_tools(rel: str, banks: dict[str, list[str]]) -> None:
    state = _state(rel)
    for bank, digests in banks.items():
        alg = alg_from_name(bank)
        got = [a.digests[alg].hex() for a in state.boot_applications]
        assert got == digests, bank


def test_keys_and_authorities_decoded() -> None:
    state = _state("go-attestation/option_rom_eventlog")
    assert state.db is not None and state.kek is not None and state.pk is not None
    db = [e.certificate.common_name for s in state.db for e in s.entries if e.certificate]
    assert "Microsoft Corporation UEFI CA 2011" in db
    auth = [a.entry.certificate.common_name for a in state.authorities if a.entry.certificate]
    assert auth == ["Microsoft Corporation UEFI CA 2011", "Microsoft Windows Production PCA 2011"]
    doc = boot_state_to_json(state)
    assert any("CN=Microsoft Corporation UEFI CA 2011" in str(e.get("subject")) for e in doc["db"])  # type: ignore[union-attr]


def test_boot_order_options_and_device_paths() -> None:
    state = _state("go-tpm-tools/ubuntu-2104-no-dbx.bin")
    assert state.boot_order is not None and len(state.boot_order) >= 1
    assert {o.number for o in state.boot_options} <= set(state.boot_order) | {
        o.number for o in state.boot_options
    }
    assert state.boot_applications[0].device_path == (
        "PciRoot(0x0)/Pci(0x3,0x0)/SCSI(1,0)/HD(15,GPT,6ea6f740-25ef-4269-838d-1a6f21ebf27f,"
        "0x2800,0x35000)/\\EFI\\ubuntu\\shimx64.efi"
    )
    assert state.kernel_cmdline is not None and state.kernel_cmdline.startswith(
        "/boot/vmlinuz-5.11.0-1008-gcp"
    )
    assert state.dbx == ()


def test_systemd_boot_cmdline_in_state() -> None:
    assert _state("tpm2-tools/event-sd-boot-fedora37.bin").kernel_cmdline == (
        "console=ttyS0 console=tty0 efi=debug"
    )


def test_shim_state() -> None:
    gke = _state("go-tpm-tools/confidential-gke-debug-251000_eventlog.bin")
    assert gke.shim.measured_variables == ("MokList", "MokListX", "MokListTrusted")
    assert gke.shim.sbat_level == "sbat,1,2021030218\n"
    assert gke.shim.mok_list_trusted == 1
    assert _state("secboot/eventlog2-2020-03.bin").shim.mok_sb_state == 1


def test_separators_per_pcr() -> None:
    state = _state("go-tpm-tools/cos-101-amd-sev.bin")
    assert set(range(8)) <= set(state.separators)
    assert all(s.kind == "normal" for seps in state.separators.values() for s in seps)
    doc = boot_state_to_json(state)
    assert "0" in doc["separators"]  # type: ignore[operator]


def test_every_corpus_log_gives_a_state() -> None:
    for p in sorted(EVENTLOGS.glob("*/*")):
        if p.name.endswith((".json", ".yaml", ".yml", ".txt", ".warn", ".md", "-bogus", "-empty")):
            continue
        json.dumps(boot_state_to_json(extract_boot_state(parse_log(p.read_bytes()))))
