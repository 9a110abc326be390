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


def _bootwatch(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BOOTWATCH_")}
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env={**base, **env})


def test_service_keys_default_to_the_xdg_data_dir_not_the_working_tree(tmp_path: Path) -> None:
    work = tmp_path / "clone"
    work.mkdir()
    r = _bootwatch(["service", "dev-cert"], work, {"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert r.returncode == 0, r.stderr
    tls = tmp_path / "xdg" / "bootwatch" / "service" / "tls"
    assert Path(r.stdout.strip()) == tls / "dev-ca.pem"
    assert (tls / "server.key").stat().st_mode & 0o077 == 0
    assert list(work.iterdir()) == []  # nothing lands in the current folder
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    # reading needs a database: provider list says so instead of creating one
    r = _bootwatch(["provider", "list", "--json"], work, env)
    assert r.returncode == 2 and "bootwatch service migrate" in r.stderr, r.stderr
    r = _bootwatch(["service", "migrate"], work, env)
    assert r.returncode == 0, r.stderr
    r = _bootwatch(["provider", "list", "--json"], work, env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "xdg" / "bootwatch" / "service" / "bootwatch.db").is_file()
    assert list(work.iterdir()) == []


def test_service_wait_gives_up_naming_the_reason(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _bootwatch(["service", "wait", "--timeout", "0.3"], tmp_path,
                   {"BOOTWATCH_PORT": str(port)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith(f"bootwatch: error: https://127.0.0.1:{port} not ready after 0.3 s")
