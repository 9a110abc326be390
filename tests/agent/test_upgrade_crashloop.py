"""A new agent version that crash-loops is rolled back after a few starts, not after the
whole rollback deadline (docs/upgrade.md, "Roll back").

The unit runs ``ROOT/previous/bin/bootwatch agent upgrade --rollback-expired`` before
EVERY start (``ExecStartPre=-``); that guard counts the starts of the pending version
in ``upgrade.json`` and rolls it back before the start past ``max_unconfirmed_starts``.

The end-to-end tests reuse the release tests' real world (tests/releases: two real
wheels, real per-version venvs, the monitor's release routes on loopback) and play the
supervisor: before each start they run the guard exactly as the unit's command line
does, then start ``ROOT/current/bin/bootwatch``.  The others drive the upgrader's public
methods over a real install root and state directory (symlinks switched on disk).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bootwatch.agent.upgrade import (
    EXIT_RESTART,
    AgentUpgrader,
    OutcomeKind,
    parse_upgrade_config,
    switch_current,
)
from bootwatch.errors import ConfigError, StorageError

from ..releases import conftest as releases
from ..releases.test_upgrade_e2e import NEW, OLD, VM, Agent, _publish, make_agent

# the release tests' fixtures, under the same names (real wheels, keys, the monitor)
wheels = releases.wheels
release_key = releases.release_key
other_key = releases.other_key
monitor_factory = releases.monitor_factory
monitor = releases.monitor
sign = releases.sign


# --- the supervisor, played with the unit's own command lines --------------------------


def guard(agent: Agent) -> subprocess.CompletedProcess[str]:
    """The unit's ``ExecStartPre=-``: the known-good version's rollback guard."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run(
        [str(agent.root / "previous" / "bin" / "bootwatch"), "agent", "upgrade",
         "--config", str(agent.config), "--rollback-expired"],
        capture_output=True, text=True, timeout=120, env=env)


def upgraded_agent(tmp_path: Path, wheels: dict[str, Path], monitor: Any, release_key: Any,
                   sign: Any) -> Agent:
    """An agent on OLD that installed NEW and switched ``current`` (exit 75), with a
    deadline far enough away that only the start count can roll it back."""
    agent = make_agent(tmp_path, wheels, OLD, monitor.url, release_key.public_pem,
                       deadline=3600)
    monitor.fleet.report(VM, OLD)
    _publish(monitor, wheels[NEW], NEW, release_key, sign)
    done = agent.upgrade()
    assert done.returncode == EXIT_RESTART, done.stdout + done.stderr
    assert agent.current() == f"versions/{NEW}"
    return agent


def break_release(agent: Agent, version: str) -> None:
    """Make the installed ``version`` die at start-up, before any cycle."""
    site = agent.root / "versions" / version
    (main,) = site.glob("lib/python3*/site-packages/bootwatch/cli/main.py")
    main.write_text('raise SystemExit("this release cannot start")\n')
    for cached in main.parent.glob("__pycache__/main.*.pyc"):
        cached.unlink()


@pytest.mark.slow
def test_a_release_started_three_times_without_a_cycle_is_rolled_back_before_the_fourth(
    tmp_path: Path, wheels: dict[str, Path], monitor: Any, release_key: Any, sign: Any
) -> None:
    agent = upgraded_agent(tmp_path, wheels, monitor, release_key, sign)
    break_release(agent, NEW)
    for start in (1, 2, 3):
        before = guard(agent)
        assert before.returncode == 0, before.stderr
        assert before.stdout.strip() == "nothing to roll back"
        assert agent.upgrade_state()["pending"]["starts"] == start
        assert agent.current() == f"versions/{NEW}"
        crashed = agent.run("agent", "run", "--config", str(agent.config))
        assert crashed.returncode != 0 and "cannot start" in crashed.stderr

    fourth = guard(agent)
    assert fourth.returncode == 0, fourth.stderr
    assert fourth.stdout.startswith(
        f"rolled_back: rolled back from {NEW} to {OLD}: {NEW} was started 3 times without "
        "completing a successful attestation cycle"), fourth.stdout
    assert "journalctl -u bootwatch-agent" in fourth.stdout
    assert agent.current() == f"versions/{OLD}"
    assert agent.version() == f"bootwatch, version {OLD}"  # the 4th start runs OLD
    state = agent.upgrade_state()
    assert state["pending"] is None and NEW in state["failed"]
    assert state["last_rollback"]["version"] == NEW
    assert "started 3 times" in state["last_rollback"]["reason"]
    again = guard(agent)
    assert again.returncode == 0 and again.stdout.strip() == "nothing to roll back"
    # remembered as failed: not taken again right away
    retry = agent.upgrade()
    assert retry.returncode == 2 and "recently_failed" in retry.stderr, retry.stderr


@pytest.mark.slow
def test_a_release_that_confirms_on_its_second_start_is_kept(
    tmp_path: Path, wheels: dict[str, Path], monitor: Any, release_key: Any, sign: Any
) -> None:
    agent = upgraded_agent(tmp_path, wheels, monitor, release_key, sign)
    first = guard(agent)  # the supervisor's first start after the switch
    assert first.returncode == 0 and first.stdout.strip() == "nothing to roll back"
    assert agent.version() == f"bootwatch, version {NEW}"  # it started, then was stopped
    second = guard(agent)
    assert second.returncode == 0 and second.stdout.strip() == "nothing to roll back"
    assert agent.upgrade_state()["pending"]["starts"] == 2
    monitor.fleet.report(VM, NEW)
    cycle = agent.cycle("ok")  # its first successful cycle confirms the upgrade
    assert cycle.returncode == 0, cycle.stderr
    state = agent.upgrade_state()
    assert state["pending"] is None and state["last_confirmed"]["version"] == NEW
    for _ in range(4):  # later restarts (a reboot, an operator) count nothing
        later = guard(agent)
        assert later.returncode == 0 and later.stdout.strip() == "nothing to roll back"
    assert agent.current() == f"versions/{NEW}"
    assert agent.version() == f"bootwatch, version {NEW}"
    assert agent.upgrade_state()["last_rollback"] is None


# --- the guard's rule over a real install root and state directory ----------------------


def _layout(tmp_path: Path, *, current: str = NEW) -> tuple[Path, Path]:
    """``ROOT/versions/{OLD,NEW}``, ``current`` -> ``current``, ``previous`` -> OLD, and an
    empty state directory; returns (root, state_dir)."""
    root, state = tmp_path / "opt-bootwatch", tmp_path / "state"
    for version in (OLD, NEW):
        (root / "versions" / version / "bin").mkdir(parents=True)
    switch_current(root, root / "versions" / current)
    switch_current(root, root / "versions" / OLD, name="previous")
    state.mkdir()
    return root, state


def _upgrader(tmp_path: Path, root: Path, state: Path, **keys: Any) -> AgentUpgrader:
    """The guard's upgrader as ``agent upgrade --rollback-expired`` builds it (OLD runs it)."""
    key = tmp_path / "release.pub"
    key.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    table = {"monitor_url": "https://monitor.example", "release_public_key": str(key),
             "install_root": str(root), "state_dir": str(state), **keys}
    config = parse_upgrade_config(table, source="agent.toml")
    return AgentUpgrader(config, vm_id="-", running_version=OLD,
                         running_prefix=root / "versions" / OLD)


def _pending(state: Path, **extra: Any) -> None:
    """``upgrade.json`` with NEW pending, as the code before the start count wrote it
    (plus ``extra``)."""
    body = {"failed": {}, "last_confirmed": None, "last_rollback": None,
            "pending": {"version": NEW, "previous_version": OLD,
                        "previous_target": f"versions/{OLD}",
                        "deadline": 4102444800.0, "installed_at": 1700000000.0, **extra}}
    (state / "upgrade.json").write_text(json.dumps(body, indent=1, sort_keys=True))


def test_a_state_file_written_before_the_start_count_loads_and_counts_from_zero(
    tmp_path: Path,
) -> None:
    root, state = _layout(tmp_path)
    _pending(state)
    upgrader = _upgrader(tmp_path, root, state)
    try:
        for start in (1, 2, 3):
            assert upgrader.rollback_if_expired() is None
            pending = json.loads((state / "upgrade.json").read_text())["pending"]
            assert pending["starts"] == start
            assert pending["installed_at"] == 1700000000.0  # the rest kept as written
        rolled = upgrader.rollback_if_expired()
        assert rolled is not None and rolled.kind is OutcomeKind.ROLLED_BACK
        assert f"{NEW} was started 3 times" in rolled.message
        assert os.readlink(root / "current") == f"versions/{OLD}"
    finally:
        upgrader.close()


def test_max_unconfirmed_starts_one_rolls_back_before_the_second_start(tmp_path: Path) -> None:
    root, state = _layout(tmp_path)
    _pending(state, starts=0)
    upgrader = _upgrader(tmp_path, root, state, max_unconfirmed_starts=1)
    try:
        assert upgrader.rollback_if_expired() is None
        rolled = upgrader.rollback_if_expired()
        assert rolled is not None and rolled.kind is OutcomeKind.ROLLED_BACK
        assert rolled.message.startswith(f"rolled back from {NEW} to {OLD}: {NEW} was "
                                         "started once without completing")
        saved = json.loads((state / "upgrade.json").read_text())
        assert saved["pending"] is None and NEW in saved["failed"]
        assert os.readlink(root / "current") == f"versions/{OLD}"
    finally:
        upgrader.close()


def test_a_start_of_the_old_version_after_an_interrupted_switch_is_not_counted(
    tmp_path: Path,
) -> None:
    """Pending recorded, ``current`` never switched: what starts is OLD, which rolls the
    record back itself on its first cycle; the guard must not count it as NEW's start."""
    root, state = _layout(tmp_path, current=OLD)
    _pending(state, starts=3)
    upgrader = _upgrader(tmp_path, root, state)
    try:
        for _ in range(2):
            assert upgrader.rollback_if_expired() is None
        assert json.loads((state / "upgrade.json").read_text())["pending"]["starts"] == 3
        assert os.readlink(root / "current") == f"versions/{OLD}"
    finally:
        upgrader.close()


def test_the_deadline_still_rolls_back_before_the_start_limit(tmp_path: Path) -> None:
    root, state = _layout(tmp_path)
    _pending(state, starts=1, deadline=1000.0)
    upgrader = _upgrader(tmp_path, root, state)
    try:
        rolled = upgrader.rollback_if_expired()
        assert rolled is not None and rolled.kind is OutcomeKind.ROLLED_BACK
        assert "had not confirmed a successful cycle within 900 s" in rolled.message
    finally:
        upgrader.close()


def test_a_damaged_start_count_is_named(tmp_path: Path) -> None:
    root, state = _layout(tmp_path)
    _pending(state, starts="three")
    upgrader = _upgrader(tmp_path, root, state)
    try:
        with pytest.raises(StorageError, match=r"upgrade\.json: pending\.starts: expected a "
                           r"whole number >= 0, got 'three'; delete the key"):
            upgrader.rollback_if_expired()
    finally:
        upgrader.close()


@pytest.mark.parametrize(("value", "problem"), [
    (0, "must be at least 1, got 0"),
    (True, "expected a whole number, got True"),
    (2.5, "expected a whole number, got 2.5"),
    ("3", "expected a whole number, got '3'"),
])
def test_max_unconfirmed_starts_is_checked_and_named(
    tmp_path: Path, value: object, problem: str,
) -> None:
    root, state = _layout(tmp_path)
    with pytest.raises(ConfigError) as caught:
        _upgrader(tmp_path, root, state, max_unconfirmed_starts=value)
    assert str(caught.value) == f"agent.toml: [upgrade] max_unconfirmed_starts: {problem}"


def test_max_unconfirmed_starts_defaults_to_three(tmp_path: Path) -> None:
    root, state = _layout(tmp_path)
    upgrader = _upgrader(tmp_path, root, state)
    try:
        assert upgrader.config.max_unconfirmed_starts == 3
    finally:
        upgrader.close()
