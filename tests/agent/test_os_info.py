"""OS fields and log reading of the collector (no TPM needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootwatch.agent.evidence import OsInfo, read_os_info, read_tcg_log
from bootwatch.errors import InputError


def test_os_release_fields(tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text('PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n')
    assert read_os_info(f) == OsInfo(distro="Ubuntu", version_major=22, version_minor=4)


def test_os_release_missing_gives_defaults(tmp_path: Path) -> None:
    assert read_os_info(tmp_path / "none") == OsInfo()


def test_missing_log_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the TCG event log"):
        read_tcg_log(tmp_path / "binary_bios_measurements")
