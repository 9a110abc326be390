"""The OS a lab VM reports is derived from its real boot log (no swtpm needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootwatch.agent.evidence import OsInfo, read_os_info
from bootwatch.errors import InputError
from bootwatch.lab.osrelease import check_os_release, derive_os_release, parse_os_release

from .conftest import EVENTLOGS, SHARED


@pytest.mark.parametrize(
    ("log", "name", "os_id"),
    [
        ("go-tpm-tools/cos-101-amd-sev.bin", "Container-Optimized OS 101", "cos"),
        ("go-tpm-tools/cos-85-amd-sev.bin", "Container-Optimized OS 85", "cos"),
        ("go-tpm-tools/ubuntu-2104-no-secure-boot.bin", "Ubuntu 21.04", "ubuntu"),
        ("go-tpm-tools/rhel8-uefi.bin", "Red Hat Enterprise Linux 8.3", "rhel"),
        ("go-tpm-tools/glinux-alex.bin", "Debian GNU/Linux", "debian"),
        ("go-tpm-tools/arch-linux-workstation.bin", "Arch Linux", "arch"),
        ("hirs/TpmLog.bin", "Windows", "windows"),
        ("go-tpm-tools/debian-10.bin", "Linux", "linux"),  # nothing in it names the distro
    ],
)
def test_derived_from_the_log(log: str, name: str, os_id: str) -> None:
    path = EVENTLOGS / log
    osr = derive_os_release(path.read_bytes(), path.name)
    assert (osr.name, osr.fields["ID"]) == (name, os_id)
    assert osr.source.startswith("derived from the log" if os_id != "linux" else "generic")


def test_windows_from_sipa_events_and_agent_reports_windows(tmp_path: Path) -> None:
    path = SHARED / "corpus/maa/azure-guest-vm-derived/azure-trusted-launch-ws2019.tcglog.bin"
    osr = derive_os_release(path.read_bytes(), path.name)
    assert osr.fields["ID"] == "windows" and "sipa" in osr.source
    f = tmp_path / "os-release"
    f.write_text(osr.text)
    assert read_os_info(f) == OsInfo("Windows", "Windows", 0, 0, "NotApplicable")


def test_unreadable_log_gives_generic_linux() -> None:
    osr = derive_os_release(b"not a log", "x.bin")
    assert osr.fields == {"NAME": "Linux", "ID": "linux"} and "unreadable" in osr.source


def test_given_file_is_checked() -> None:
    assert parse_os_release(check_os_release(b'# c\nNAME="A B"\nID=a\n', "f")) == {
        "NAME": "A B", "ID": "a"}
    with pytest.raises(InputError, match="no NAME= line"):
        check_os_release(b"ID=x\n", "f")
    with pytest.raises(InputError, match="not UTF-8"):
        check_os_release(b"NAME=\xff\n", "f")
    with pytest.raises(InputError, match="over"):
        check_os_release(b"NAME=x\n" + b"#" * 70000, "f")
