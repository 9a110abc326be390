"""How the daemon and the unit reach the signed-upgrade machinery (docs/upgrade.md):

- the daemon's upgrade checks and ``bootwatch agent upgrade`` (the unit's pre-start guard)
  take the same top-level fallbacks, so they read one ``upgrade.json`` and reach the
  monitor the same way (the daemon took none: an ``[upgrade]`` table without its own
  ``monitor_url`` stopped it, and a custom ``state_dir`` split the two);
- ``bootwatch agent install`` run from ``ROOT/current/bin/bootwatch`` writes a unit that
  starts ``current`` (not the version the link pointed at when installed, which would roll
  every upgrade back) with the rollback guard, a writable install root and no start limit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from bootwatch.agent.config import load_config
from bootwatch.agent.upgrade import parse_upgrade_config
from bootwatch.cli.agent_run import _upgrader
from bootwatch.cli.agent_upgrade import load_upgrade_table


def _ca(path: Path, name: str) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_the_daemon_takes_the_fallbacks_the_upgrade_command_takes(tmp_path: Path) -> None:
    release_key = tmp_path / "release.pub"
    release_key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    provider_ca = _ca(tmp_path / "provider-ca.pem", "provider")
    monitor_ca = _ca(tmp_path / "monitor-ca.pem", "monitor")
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(
        f'url = "https://127.0.0.1:1/"\n'
        f'monitor_url = "https://monitor.example:8443"\n'
        f'vm_id = "VM-7"\n'
        f'state_dir = "{state}"\n'
        f'ca = "{provider_ca}"\n'
        f'monitor_ca = "{monitor_ca}"\n'
        f'proxy = "http://proxy.example:3128"\n'
        f'no_proxy = "internal.example"\n'
        f'\n[upgrade]\nrelease_public_key = "{release_key}"\n')
    loaded = load_config(config, environ={}, overrides={"monitor_url": None, "state_dir": None})
    daemon = _upgrader(loaded, config)
    assert daemon is not None
    try:
        command = parse_upgrade_config(load_upgrade_table(config), source=str(config))
        for got in (daemon.config, command):
            assert got.monitor_url == "https://monitor.example:8443"
            assert got.vm_id == "VM-7"
            assert got.state_dir == state
            assert got.ca == monitor_ca  # the upgrade talks to the monitor
            assert got.proxy == "http://proxy.example:3128"
            assert got.no_proxy == "internal.example"
        assert daemon.config == command
    finally:
        daemon.close()


def test_install_from_the_current_link_keeps_it_and_adds_the_rollback_guard(
    tmp_path: Path,
) -> None:
    script = shutil.which("bootwatch")
    if script is None:
        pytest.fail("the bootwatch console script is not installed (scripts/setup installs it)")
    root = tmp_path / "opt" / "bootwatch"
    bindir = root / "versions" / "0.1.0" / "bin"
    bindir.mkdir(parents=True)
    shutil.copy2(script, bindir / "bootwatch")
    (root / "current").symlink_to(Path("versions") / "0.1.0")
    (root / "previous").symlink_to(Path("versions") / "0.1.0")
    prefix = tmp_path / "root"
    res = subprocess.run([str(root / "current" / "bin" / "bootwatch"), "agent", "install",
                          "--prefix", str(prefix)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PATH=os.path.dirname(sys.executable) + ":"
                                  + os.environ.get("PATH", "")))
    assert res.returncode == 0, res.stderr
    unit = (prefix / "etc/systemd/system/bootwatch-agent.service").read_text()
    lines = unit.splitlines()
    assert (f"ExecStart={root}/current/bin/bootwatch agent run "
            "--config /etc/bootwatch/agent.toml") in lines
    assert (f"ExecStartPre=-{root}/previous/bin/bootwatch agent upgrade "
            "--config /etc/bootwatch/agent.toml --rollback-expired") in lines
    assert f"ReadWritePaths={root}" in lines
    assert "StartLimitIntervalSec=0" in lines
    assert "versions/0.1.0" not in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze not installed (scripts/setup installs systemd)")
    check = subprocess.run([analyze, "verify", str(prefix / "etc/systemd/system"
                                                   / "bootwatch-agent.service")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr


@pytest.mark.parametrize("how", ["environment", "relative"])
def test_the_pre_start_guard_reads_the_daemons_upgrade_state(
        tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the unit's pre-start guard (``agent upgrade --rollback-expired``)
    read the raw TOML file, so ``BOOTWATCH_AGENT_STATE_DIR`` or a relative ``state_dir``
    (resolved against the file by the daemon, against / by the guard under systemd) sent
    the two to different upgrade.json files: a version that could not start was never
    rolled back."""
    release_key = tmp_path / "release.pub"
    release_key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    config = tmp_path / "etc" / "agent.toml"
    config.parent.mkdir()
    state_line = 'state_dir = "state"\n' if how == "relative" else ""
    config.write_text(f'url = "https://attest.example"\nmonitor_url = "https://mon.example"\n'
                      f'vm_id = "VM-1"\n{state_line}'
                      f'\n[upgrade]\nrelease_public_key = "{release_key}"\n')
    monkeypatch.chdir("/")  # systemd's working directory
    if how == "environment":
        monkeypatch.setenv("BOOTWATCH_AGENT_STATE_DIR", str(tmp_path / "from-env"))
    want = tmp_path / ("from-env" if how == "environment" else "etc/state")
    daemon = _upgrader(load_config(config), config)
    assert daemon is not None
    try:
        guard = parse_upgrade_config(load_upgrade_table(config), source=str(config))
        assert daemon.config.state_dir == guard.state_dir == want
    finally:
        daemon.close()
