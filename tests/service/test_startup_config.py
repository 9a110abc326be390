"""Files the settings name (AIK trust anchors, DBX data, Secure Boot key templates) are
read when the app is made: a wrong path stops start-up with its name, instead of
failing the first attestation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bootwatch.errors import ConfigError
from bootwatch.service.app import create_app
from bootwatch.service.settings import Settings


@pytest.mark.parametrize(
    "field", ["trust_anchors_path", "dbx_data_path", "secureboot_templates_path"]
)
def test_a_wrong_path_stops_create_app(tmp_path: Path, field: str) -> None:
    settings = Settings(data_dir=tmp_path, **{field: str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match=field):
        create_app(settings)


def test_cli_reports_a_wrong_templates_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bootwatch.cli.main", "service", "run", "--insecure-http",
         "--port", "0", "--data-dir", str(tmp_path),
         "--secureboot-templates", str(tmp_path / "nope.json")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "secureboot_templates_path" in proc.stderr
    assert "Traceback" not in proc.stderr
