"""A path the user gave explicitly is used or refused, never silently replaced (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "demo", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--corpus", "/nonexistent"], {}, "--corpus /nonexistent: no such folder"),
        ([], {"BOOTWATCH_SHARED": "/nonexistent"}, "BOOTWATCH_SHARED=/nonexistent: no such"),
        (["--corpus", "{tmp}"], {}, "not the shared corpus"),
        ([], {"BOOTWATCH_SHARED": "{tmp}"}, "corpus: no such folder"),
    ],
)
def test_wrong_corpus_path_is_exit_2_naming_it(tmp_path: Path, args: list[str],
                                               env: dict[str, str], named: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    r = _demo(*args, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("bootwatch: error: ") and named in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
