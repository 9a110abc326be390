"""The agent's upgrade hook in process (config, rules, cadence) and the release CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootwatch.agent.upgrade import (
    AgentUpgrader,
    OutcomeKind,
    UpgradeConfig,
    parse_upgrade_config,
    switch_current,
)
from bootwatch.errors import ConfigError
from bootwatch.protocol.release import RefusalReason, decode_signed_release, verify_release

BASE = {"monitor_url": "https://monitor.example:8443", "release_public_key": "/etc/k.pem"}


@pytest.mark.parametrize("changes,needle", [
    ({"monitor_url": None}, "[upgrade] monitor_url"),
    ({"monitor_url": "ftp://x"}, "[upgrade] monitor_url"),
    ({"release_public_key": None}, "[upgrade] release_public_key"),
    ({"release_public_key": []}, "[upgrade] release_public_key"),
    ({"check_interval": "hourly"}, "[upgrade] check_interval: expected a number"),
    ({"check_interval": 0}, "[upgrade] check_interval: must be at least"),
    ({"rollback_deadline": -5}, "[upgrade] rollback_deadline"),
    ({"allow_major": "yes"}, "[upgrade] allow_major: expected true or false"),
    ({"install_root": 5}, "[upgrade] install_root: expected a path"),
    ({"max_wheel_bytes": 10}, "[upgrade] max_wheel_bytes"),
])
def test_a_bad_config_value_names_the_key_and_the_file(
    changes: dict[str, Any], needle: str
) -> None:
    table = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    with pytest.raises(ConfigError) as err:
        parse_upgrade_config(table, source="/etc/bootwatch/agent.toml")
    assert str(err.value).startswith("/etc/bootwatch/agent.toml: ") and needle in str(err.value)


def test_defaults_string_booleans_and_unknown_keys(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "bootwatch.agent.upgrade"):
        cfg = parse_upgrade_config(
            {**BASE, "allow_major": "True", "release_public_key": ["/a.pem", "/b.pem"],
             "future_knob": 1},
            source="agent.toml",
        )
    assert cfg.allow_major is True and cfg.release_public_keys == (Path("/a.pem"), Path("/b.pem"))
    assert cfg.install_root == Path("/opt/bootwatch") and cfg.check_interval == 3600
    assert cfg.rollback_deadline == 900 and cfg.allow_prerelease is False
    assert cfg.unknown_keys == ("future_knob",)
    assert "future_knob: unknown key" in caplog.text


def test_an_unreadable_release_key_is_a_config_error_naming_it(tmp_path: Path) -> None:
    cfg = UpgradeConfig(monitor_url="http://127.0.0.1:9", vm_id="vm-1",
                        release_public_keys=(tmp_path / "missing.pem",))
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        AgentUpgrader(cfg)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ConfigError, match=r"junk\.pem"):
        AgentUpgrader(UpgradeConfig(monitor_url="http://127.0.0.1:9", vm_id="vm-1",
                                    release_public_keys=(junk,)))


def _config(tmp_path: Path, url: str, key: Path, **extra: Any) -> UpgradeConfig:
    return UpgradeConfig(
        monitor_url=url, release_public_keys=(key,), vm_id="vm-1",
        install_root=tmp_path / "root", state_dir=tmp_path / "state", **extra,
    )


def _fake_major(tmp_path: Path) -> Path:
    wheel = tmp_path / "bootwatch-2.0.0-py3-none-any.whl"
    wheel.write_bytes(b"never installed: the rule refuses it before any download")
    return wheel


def test_a_major_is_refused_unless_allowed(
    tmp_path: Path, hostile: Any, release_key: Any, sign: Any
) -> None:
    box, url = hostile
    box.offer = sign(_fake_major(tmp_path), "2.0.0", release_key)
    refused = AgentUpgrader(_config(tmp_path, url, release_key.public_pem),
                            running_version="1.4.0").run_check(apply=True)
    assert refused.kind is OutcomeKind.REFUSED and refused.reason is RefusalReason.MAJOR
    assert "allow_major" in refused.message
    allowed = AgentUpgrader(_config(tmp_path, url, release_key.public_pem, allow_major=True),
                            running_version="1.4.0").run_check(apply=False)
    assert allowed.kind is OutcomeKind.OFFERED and allowed.version == "2.0.0"
    assert not (tmp_path / "root").exists() and not (tmp_path / "state" / "upgrade.json").exists()


def test_an_agent_not_running_from_current_refuses_to_install(
    tmp_path: Path, hostile: Any, release_key: Any, sign: Any, wheels: dict[str, Path]
) -> None:
    box, url = hostile
    box.offer = sign(wheels["0.2.0"], "0.2.0", release_key)
    box.wheel = wheels["0.2.0"].read_bytes()
    root = tmp_path / "root"
    (root / "versions" / "0.1.0").mkdir(parents=True)
    switch_current(root, root / "versions" / "0.1.0")
    upgrader = AgentUpgrader(_config(tmp_path, url, release_key.public_pem),
                             running_version="0.1.0", running_prefix=tmp_path / "elsewhere")
    outcome = upgrader.run_check(apply=True)
    assert outcome.kind is OutcomeKind.ERROR
    assert "not from" in outcome.message and "current/bin/bootwatch" in outcome.message
    assert os.readlink(root / "current") == "versions/0.1.0"
    assert sorted(p.name for p in (root / "versions").iterdir()) == ["0.1.0"]
    assert upgrader.maybe_upgrade() is False


def test_maybe_upgrade_asks_the_monitor_once_per_interval(
    tmp_path: Path, hostile: Any, release_key: Any
) -> None:
    box, url = hostile
    now = [1000.0]
    upgrader = AgentUpgrader(_config(tmp_path, url, release_key.public_pem, check_interval=600),
                             running_version="0.1.0", clock=lambda: now[0])
    assert upgrader.maybe_upgrade() is False and box.offer_requests == 1
    assert upgrader.last_outcome is not None
    assert upgrader.last_outcome.kind is OutcomeKind.NO_OFFER
    now[0] += 599
    assert upgrader.maybe_upgrade() is False and box.offer_requests == 1
    now[0] += 62  # past the interval plus its at most 10% jitter
    assert upgrader.maybe_upgrade() is False and box.offer_requests == 2


def test_a_check_due_before_the_next_cycle_runs_a_little_early(
    tmp_path: Path, hostile: Any, release_key: Any
) -> None:
    # the daemon asks once a cycle; a check due between two cycles runs at the cycle
    # nearer its due time, not always at the later one (with the default 1 h for both a
    # check waited up to two cycles, past the rollout's 2 h upgrade_timeout)
    box, url = hostile
    now = [1000.0]
    upgrader = AgentUpgrader(_config(tmp_path, url, release_key.public_pem, check_interval=3600),
                             running_version="0.1.0", clock=lambda: now[0])
    assert upgrader.maybe_upgrade(next_chance=now[0] + 3600) is False
    assert box.offer_requests == 1
    now[0] += 3300  # due in 300-660 s; the next cycle is 3,600 s away: nearer now
    assert upgrader.maybe_upgrade(next_chance=now[0] + 3600) is False
    assert box.offer_requests == 2
    now[0] += 1800  # due in 1,500-1,860 s; the next cycle, 1,700 s away, may be nearer
    upgrader._next_check = now[0] + 1500.0  # pin the jitter for this step
    assert upgrader.maybe_upgrade(next_chance=now[0] + 1700) is False
    assert box.offer_requests == 2
    now[0] += 1700  # now 200 s late
    assert upgrader.maybe_upgrade(next_chance=now[0] + 3600) is False
    assert box.offer_requests == 3
    # a next chance already past (a "Retry-After: 0" cycle) is no reason to check early
    now[0] += 100
    for past in (now[0] - 0.001, 0.0):
        assert upgrader.maybe_upgrade(next_chance=past) is False
    assert box.offer_requests == 3


def test_checks_follow_the_daemons_jittered_cycles_within_one_cycle(
    tmp_path: Path, hostile: Any, release_key: Any
) -> None:
    # the daemon's own schedule (1 h +-10 %) against the default check interval: over 200
    # cycles no gap between two checks exceeds the check interval (plus its 10 % jitter)
    # and half a cycle
    import itertools
    import random

    box, url = hostile
    rng = random.Random(7)
    now = [0.0]
    upgrader = AgentUpgrader(_config(tmp_path, url, release_key.public_pem, check_interval=3600),
                             running_version="0.1.0", clock=lambda: now[0])
    checks: list[float] = []
    for _ in range(200):
        nxt = now[0] + 3600 + rng.uniform(-360, 360)
        before = box.offer_requests
        upgrader.maybe_upgrade(next_chance=nxt)
        if box.offer_requests > before:
            checks.append(now[0])
        now[0] = nxt
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert len(checks) >= 190
    assert max(gaps) <= 3600 * 1.1 + 3960 / 2


def test_a_pending_upgrade_left_by_a_version_that_did_not_start_is_undone(
    tmp_path: Path, release_key: Any
) -> None:
    """The supervisor restarted the OLD binary: the switch cannot take effect, so undo it."""
    root = tmp_path / "root"
    for v in ("0.1.0", "0.2.0"):
        (root / "versions" / v).mkdir(parents=True)
    switch_current(root, root / "versions" / "0.2.0")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "upgrade.json").write_text(json.dumps({"pending": {
        "version": "0.2.0", "previous_version": "0.1.0", "previous_target": "versions/0.1.0",
        "deadline": 10**12, "installed_at": 0}, "failed": {}}))
    upgrader = AgentUpgrader(_config(tmp_path, "http://127.0.0.1:9", release_key.public_pem),
                             running_version="0.1.0")
    upgrader.after_cycle(True)
    assert os.readlink(root / "current") == "versions/0.1.0"
    state = json.loads((tmp_path / "state" / "upgrade.json").read_text())
    assert state["pending"] is None and "0.2.0" in state["failed"]
    assert "supervisor must start" in state["last_rollback"]["reason"]
    assert upgrader.restart_requested is False  # the old version already runs


def test_a_switch_interrupted_after_the_pending_record_is_cleared_with_that_reason(
    tmp_path: Path, release_key: Any
) -> None:
    root = tmp_path / "root"
    for v in ("0.1.0", "0.2.0"):
        (root / "versions" / v).mkdir(parents=True)
    switch_current(root, root / "versions" / "0.1.0")  # the crash came before the switch
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "upgrade.json").write_text(json.dumps({"pending": {
        "version": "0.2.0", "previous_version": "0.1.0", "previous_target": "versions/0.1.0",
        "deadline": 10**12, "installed_at": 0}, "failed": {}}))
    upgrader = AgentUpgrader(_config(tmp_path, "http://127.0.0.1:9", release_key.public_pem),
                             running_version="0.1.0")
    upgrader.after_cycle(False)
    assert os.readlink(root / "current") == "versions/0.1.0"
    state = json.loads((tmp_path / "state" / "upgrade.json").read_text())
    assert state["pending"] is None
    reason = state["last_rollback"]["reason"]
    assert reason == "the switch to 0.2.0 was interrupted before it happened"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootwatch.cli.main", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_release_keygen_sign_and_publish_from_the_command_line(
    tmp_path: Path, wheels: dict[str, Path], monitor: Any
) -> None:
    keys = tmp_path / "keys"
    made = _cli("release", "keygen", "--out", str(keys))
    assert made.returncode == 0, made.stderr
    assert (keys / "release-key.pem").stat().st_mode & 0o777 == 0o600
    again = _cli("release", "keygen", "--out", str(keys))
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    manifest = tmp_path / "m.json"
    signed = _cli("release", "sign", str(wheels["0.2.0"]), "--key", str(keys / "release-key.pem"),
                  "--out", str(manifest), "--min-agent-version", "0.1")
    assert signed.returncode == 0, signed.stderr
    from bootwatch.protocol.release import load_public_key

    pub = load_public_key((keys / "release-key.pub.pem").read_bytes(), "pub")
    m = verify_release(decode_signed_release(manifest.read_bytes()), (pub,))
    data = wheels["0.2.0"].read_bytes()
    assert (m.version, m.size, m.sha256) == ("0.2.0", len(data), hashlib.sha256(data).hexdigest())
    assert m.min_agent_version == "0.1"

    liar = tmp_path / "bootwatch-0.3.0-py3-none-any.whl"
    liar.write_bytes(data)  # a 0.2.0 wheel under a 0.3.0 name
    lied = _cli("release", "sign", str(liar), "--key", str(keys / "release-key.pem"),
                "--out", str(tmp_path / "liar.json"))
    assert lied.returncode == 2 and "METADATA says version '0.2.0'" in lied.stderr

    no_token = _cli("release", "publish", str(wheels["0.2.0"]), "--manifest", str(manifest),
                    "--monitor", monitor.url, env={"BOOTWATCH_MONITOR_TOKEN": ""})
    assert no_token.returncode == 2 and "BOOTWATCH_MONITOR_TOKEN" in no_token.stderr
    token = monitor.admin_headers["Authorization"].removeprefix("Bearer ")
    # the monitor does not trust this fresh key: the refusal comes back with its reason
    refused = _cli("release", "publish", str(wheels["0.2.0"]), "--manifest", str(manifest),
                   "--monitor", monitor.url, env={"BOOTWATCH_MONITOR_TOKEN": token})
    assert refused.returncode == 2 and "unknown_key" in refused.stderr
    monitor.store.trusted_keys = (*monitor.store.trusted_keys, pub)
    published = _cli("release", "publish", str(wheels["0.2.0"]), "--manifest", str(manifest),
                     "--monitor", monitor.url, env={"BOOTWATCH_MONITOR_TOKEN": token})
    assert published.returncode == 0, published.stderr
    assert published.stdout.startswith("published: bootwatch 0.2.0")
    assert token not in published.stdout + published.stderr


def test_pending_deadline_is_the_trial_of_the_running_version_only(
    tmp_path: Path, release_key: Any
) -> None:
    (tmp_path / "state").mkdir()
    state = tmp_path / "state" / "upgrade.json"
    state.write_text(json.dumps({"pending": {
        "version": "0.2.0", "previous_version": "0.1.0", "previous_target": "versions/0.1.0",
        "deadline": 5000.5, "installed_at": 0}, "failed": {}}))
    cfg = _config(tmp_path, "http://127.0.0.1:9", release_key.public_pem)
    assert AgentUpgrader(cfg, running_version="0.2.0").pending_deadline() == 5000.5
    # the old version still runs (the switch did not take): nothing of its own on trial
    assert AgentUpgrader(cfg, running_version="0.1.0").pending_deadline() is None
    state.write_text(json.dumps({"pending": None, "failed": {}}))
    assert AgentUpgrader(cfg, running_version="0.2.0").pending_deadline() is None


def test_a_local_file_error_is_an_error_outcome_not_a_dead_daemon(
    tmp_path: Path, hostile: Any, release_key: Any, sign: Any, wheels: dict[str, Path]
) -> None:
    """Found in review: an OSError in the upgrade (a full disk while downloading, here a
    directory where the ``current`` link should be) escaped ``run_check`` and ended the
    daemon after its cycle; the check came first after each restart, so it never
    attested again."""
    box, url = hostile
    box.offer = sign(wheels["0.2.0"], "0.2.0", release_key)
    box.wheel = wheels["0.2.0"].read_bytes()
    current = tmp_path / "root" / "current"
    current.mkdir(parents=True)  # a directory, not a link: os.readlink fails
    upgrader = AgentUpgrader(_config(tmp_path, url, release_key.public_pem),
                             running_version="0.1.0", running_prefix=current)
    outcome = upgrader.run_check(apply=True)
    assert outcome.kind is OutcomeKind.ERROR and "local file error" in outcome.message
    assert str(current) in outcome.message
    assert upgrader.maybe_upgrade() is False  # no raise
