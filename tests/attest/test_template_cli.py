"""``bootwatch log template``: a known-good log's PK/KEK/db become a template the service
accepts (``--secureboot-templates``); the COS 101 log gives exactly the shipped
google-cos-v10 template."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bootwatch.attest.claims import GOOGLE_COS_V10, templates_from_json

LOGS = Path(os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared"))
LOGS = LOGS / "corpus" / "eventlogs"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "log", "template", *args],
                          capture_output=True, text=True, timeout=60)


def test_template_from_the_cos_log_is_google_cos_v10() -> None:
    proc = _run(str(LOGS / "go-tpm-tools/cos-101-amd-sev.bin"), "--name", "cos")
    assert proc.returncode == 0, proc.stderr
    [tpl] = templates_from_json(proc.stdout.encode())
    assert tpl.name == "cos"
    assert (tpl.pk, tpl.kek, tpl.db) == (GOOGLE_COS_V10.pk, GOOGLE_COS_V10.kek, GOOGLE_COS_V10.db)


def test_a_log_without_secure_boot_keys_is_refused() -> None:
    proc = _run(str(LOGS / "tpm2-tools/event-uefiservices.bin"), "--name", "x")
    assert proc.returncode == 2
    assert "does not measure PK" in proc.stderr
    assert "Traceback" not in proc.stderr
