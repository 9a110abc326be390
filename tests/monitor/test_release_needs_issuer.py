"""``bootwatch monitor run --release-key`` without ``--trusted-issuer`` is refused at start.

A defaults audit found the combination silently useless: the rollout counts a VM as
upgraded only through a health report whose token the monitor verifies, a monitor with
no trusted issuer verifies none, so every VM stayed on the version of its first report
and every rollout halted after ``upgrade_timeout``.  Real process, as a user starts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def _bootwatch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOTWATCH_")}
    env["BOOTWATCH_ADMIN_TOKENS"] = "release-issuer-admin-0123456789abcdef"
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_release_key_without_trusted_issuer_is_refused_with_the_reason(tmp_path: Path) -> None:
    key = tmp_path / "release.pub.pem"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    done = _bootwatch("monitor", "run", "--insecure-http", "--port", "1",
                      "--data-dir", str(tmp_path / "data"), "--release-key", str(key))
    assert done.returncode != 0
    assert "--release-key needs --trusted-issuer" in done.stderr
    assert "every rollout would halt" in done.stderr
    assert "Traceback" not in done.stderr
    # nothing was created: the refusal comes before the database
    assert not (tmp_path / "data").exists()
