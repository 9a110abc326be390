"""The agent's upgrade end to end: two real wheels, real venvs, real HTTP on loopback.

Each agent is a real install root (``ROOT/versions/X.Y.Z`` venvs and the
``ROOT/current`` symlink, laid out by :func:`install_version` and
:func:`switch_current`) and runs as ``ROOT/current/bin/bootwatch`` in a
subprocess.  The daemon is not on this branch, so the tests play its part
for the cycle outcome (a driver script run by the installed version calls
``after_cycle`` and ``maybe_upgrade`` exactly as the daemon does) and play
the supervisor (they start ``ROOT/current/bin/...`` again after exit 75).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootwatch.agent.upgrade import EXIT_RESTART, install_version, switch_current

pytestmark = pytest.mark.slow

OLD, NEW = "0.1.0", "0.2.0"
VM = "vm-e2e-1"

#: what the daemon does around a cycle, run by the INSTALLED version's interpreter
DRIVER = """
import sys
from pathlib import Path
from bootwatch.agent.upgrade import EXIT_RESTART, AgentUpgrader, parse_upgrade_config
from bootwatch.cli.agent_upgrade import load_upgrade_table
cfg = Path(sys.argv[1])
u = AgentUpgrader(parse_upgrade_config(load_upgrade_table(cfg), source=str(cfg)))
u.after_cycle(sys.argv[2] == "ok")
restart = u.maybe_upgrade()
print(u.running_version, u.last_outcome.kind.value if u.last_outcome else "none")
sys.exit(EXIT_RESTART if restart else 0)
"""


@dataclass
class Agent:
    root: Path
    state: Path
    config: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ROOT/current/bin/bootwatch ARGS`` (what the supervisor starts)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        return subprocess.run([str(self.root / "current" / "bin" / "bootwatch"), *args],
                              capture_output=True, text=True, timeout=300, env=env)

    def upgrade(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("agent", "upgrade", "--config", str(self.config), *extra)

    def cycle(self, outcome: str) -> subprocess.CompletedProcess[str]:
        """One daemon cycle's upgrade hooks, in the version ``current`` points at."""
        return subprocess.run(
            [str(self.root / "current" / "bin" / "python"), "-c", DRIVER, str(self.config),
             outcome], capture_output=True, text=True, timeout=300,
        )

    def version(self) -> str:
        out = self.run("--version")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def current(self) -> str:
        return os.readlink(self.root / "current")

    def upgrade_state(self) -> dict[str, Any]:
        return json.loads((self.state / "upgrade.json").read_text())


def snapshot(*roots: Path) -> dict[str, object]:
    """Every file and link under ``roots``: (size, mtime, sha256) or the link target.

    Python's own ``__pycache__`` (written on import, not by the upgrade) is left out.
    """
    seen: dict[str, object] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if "__pycache__" in path.parts:
                continue
            if path.is_symlink():
                seen[str(path)] = ("link", os.readlink(path))
            elif path.is_file():
                st = path.stat()
                seen[str(path)] = (st.st_size, st.st_mtime_ns,
                                   hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                seen[str(path)] = "dir"
    return seen


def make_agent(
    base: Path, wheels: dict[str, Path], version: str, monitor_url: str, key: Path,
    *, deadline: float = 600.0,
) -> Agent:
    root, state = base / "opt-bootwatch", base / "var-lib-bootwatch"
    state.mkdir(parents=True)
    switch_current(root, install_version(root, wheels[version], version))
    config = base / "agent.toml"
    config.write_text(
        f'vm_id = "{VM}"\nmonitor_url = "{monitor_url}"\nstate_dir = "{state}"\n\n'
        f'[upgrade]\nrelease_public_key = "{key}"\ninstall_root = "{root}"\n'
        f"check_interval = 60\nrollback_deadline = {deadline}\n"
    )
    return Agent(root, state, config)


def _publish(mon: Any, wheel: Path, version: str, key: Any, sign: Callable[..., bytes]) -> None:
    import base64

    import httpx

    body = {"signed_release": json.loads(sign(wheel, version, key)),
            "wheel": base64.b64encode(wheel.read_bytes()).decode()}
    resp = httpx.post(f"{mon.url}/api/v1/agent/releases", json=body, headers=mon.admin_headers)
    assert resp.status_code == 201, resp.text


def test_upgrade_installs_beside_switches_current_and_confirms(
    tmp_path: Path, wheels: dict[str, Path], monitor: Any, release_key: Any, sign: Any
) -> None:
    agent = make_agent(tmp_path, wheels, OLD, monitor.url, release_key.public_pem)
    assert agent.version() == f"bootwatch, version {OLD}"
    monitor.fleet.report(VM, OLD)
    _publish(monitor, wheels[NEW], NEW, release_key, sign)

    before = snapshot(agent.root, agent.state)
    checked = agent.upgrade("--check")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"offered: {NEW} is offered")
    assert snapshot(agent.root, agent.state) == before

    done = agent.upgrade()
    assert done.returncode == EXIT_RESTART, done.stdout + done.stderr
    assert done.stdout.startswith(f"installed: installed {NEW}")
    assert agent.current() == f"versions/{NEW}"
    # "the supervisor restarts it": the same command line now runs the new version
    assert agent.version() == f"bootwatch, version {NEW}"
    where = subprocess.run([str(agent.root / "current" / "bin" / "python"), "-c",
                            "import bootwatch; print(bootwatch.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).resolve().is_relative_to(agent.root / "versions" / NEW)
    pending = agent.upgrade_state()["pending"]
    assert pending["version"] == NEW and pending["previous_target"] == f"versions/{OLD}"
    assert os.readlink(agent.root / "previous") == f"versions/{OLD}"
    assert (agent.root / "versions" / OLD / "bin" / "bootwatch").exists()

    monitor.fleet.report(VM, NEW)
    cycle = agent.cycle("ok")
    assert cycle.returncode == 0, cycle.stderr
    assert cycle.stdout.split()[0] == NEW
    state = agent.upgrade_state()
    assert state["pending"] is None and state["last_confirmed"]["version"] == NEW
    assert agent.current() == f"versions/{NEW}"
    assert (agent.root / "versions" / OLD).is_dir()  # kept for a manual rollback
    again = agent.upgrade()
    assert again.returncode == 0 and again.stdout.startswith("no_offer"), again.stdout


def test_no_successful_cycle_before_the_deadline_rolls_back_by_itself(
    tmp_path: Path, wheels: dict[str, Path], monitor: Any, release_key: Any, sign: Any
) -> None:
    agent = make_agent(tmp_path, wheels, OLD, monitor.url, release_key.public_pem, deadline=3)
    monitor.fleet.report(VM, OLD)
    _publish(monitor, wheels[NEW], NEW, release_key, sign)
    done = agent.upgrade()
    assert done.returncode == EXIT_RESTART, done.stdout + done.stderr
    assert agent.version() == f"bootwatch, version {NEW}"

    # the new version's cycle fails (forced), but the deadline has not passed: it stays
    early = agent.cycle("failed")
    assert early.returncode == 0, early.stderr
    assert agent.current() == f"versions/{NEW}"
    assert agent.upgrade_state()["pending"]["version"] == NEW

    deadline = agent.upgrade_state()["pending"]["deadline"]
    time.sleep(max(0.0, deadline - time.time()) + 0.2)
    late = agent.cycle("failed")
    assert late.returncode == EXIT_RESTART, late.stdout + late.stderr
    assert late.stdout.split() == [NEW, "rolled_back"]
    assert agent.current() == f"versions/{OLD}"
    # the supervisor's restart runs the old version again
    assert agent.version() == f"bootwatch, version {OLD}"
    state = agent.upgrade_state()
    assert state["pending"] is None and NEW in state["failed"]
    assert "no successful attestation cycle" in state["last_rollback"]["reason"]

    # the rolled-back version is not taken again right away
    retry = agent.upgrade()
    assert retry.returncode == 2
    assert "recently_failed" in retry.stderr and agent.current() == f"versions/{OLD}"


def test_a_version_that_cannot_start_is_rolled_back_before_a_start_by_the_previous_one(
    tmp_path: Path, wheels: dict[str, Path], monitor: Any, release_key: Any, sign: Any
) -> None:
    agent = make_agent(tmp_path, wheels, OLD, monitor.url, release_key.public_pem, deadline=3)
    monitor.fleet.report(VM, OLD)
    _publish(monitor, wheels[NEW], NEW, release_key, sign)
    assert agent.upgrade().returncode == EXIT_RESTART
    # break the installed new version so that it dies before any cycle
    site = agent.root / "versions" / NEW
    (main,) = site.glob("lib/python3*/site-packages/bootwatch/cli/main.py")
    main.write_text('raise SystemExit("this release cannot start")\n')
    for cached in main.parent.glob("__pycache__/main.*.pyc"):
        cached.unlink()
    broken = agent.run("--version")
    assert broken.returncode != 0 and "cannot start" in broken.stderr

    guard = [str(agent.root / "previous" / "bin" / "bootwatch"), "agent", "upgrade",
             "--config", str(agent.config), "--rollback-expired"]
    early = subprocess.run(guard, capture_output=True, text=True, timeout=120)
    assert early.returncode == 0 and early.stdout.strip() == "nothing to roll back"
    assert agent.current() == f"versions/{NEW}"
    deadline = agent.upgrade_state()["pending"]["deadline"]
    time.sleep(max(0.0, deadline - time.time()) + 0.2)
    late = subprocess.run(guard, capture_output=True, text=True, timeout=120)
    assert late.returncode == 0, late.stderr
    assert late.stdout.startswith(f"rolled_back: rolled back from {NEW} to {OLD}")
    assert agent.current() == f"versions/{OLD}"
    assert agent.version() == f"bootwatch, version {OLD}"
    assert NEW in agent.upgrade_state()["failed"]


@pytest.fixture(scope="module")
def old_agent_base(tmp_path_factory: pytest.TempPathFactory, wheels: dict[str, Path]) -> Path:
    """One installed 0.1.0 root shared by the refusal tests (which must not change it)."""
    base = tmp_path_factory.mktemp("refusals")
    root = base / "opt-bootwatch"
    switch_current(root, install_version(root, wheels[OLD], OLD))
    return base


def _agent_at(base: Path, tmp_path: Path, url: str, key: Path) -> Agent:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'vm_id = "{VM}"\nmonitor_url = "{url}"\nstate_dir = "{state}"\n[upgrade]\n'
        f'release_public_key = "{key}"\ninstall_root = "{base / "opt-bootwatch"}"\n'
    )
    return Agent(base / "opt-bootwatch", state, config)


def _flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x40
    return bytes(out)


@pytest.mark.parametrize("case", ["bad_signature", "hash_mismatch", "size_mismatch"])
def test_a_forged_release_is_refused_and_changes_nothing(
    case: str, tmp_path: Path, old_agent_base: Path, wheels: dict[str, Path], hostile: Any,
    release_key: Any, sign: Any,
) -> None:
    box, url = hostile
    agent = _agent_at(old_agent_base, tmp_path, url, release_key.public_pem)
    genuine = wheels[NEW].read_bytes()
    box.offer = sign(wheels[NEW], NEW, release_key)
    if case == "bad_signature":
        # the attacker swaps in its own wheel and rewrites the hash; the signature stays
        box.wheel = _flip(genuine)
        forged = json.loads(box.offer)
        forged["manifest"]["sha256"] = hashlib.sha256(box.wheel).hexdigest()
        box.offer = json.dumps(forged).encode()
    elif case == "hash_mismatch":
        box.wheel = _flip(genuine)
    else:
        box.wheel = genuine + b"\0" * 16
    before = snapshot(agent.root, agent.state)
    out = agent.upgrade()
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"refused: release refused ({case})" in out.stderr
    assert snapshot(agent.root, agent.state) == before
    assert agent.current() == f"versions/{OLD}" and not (agent.root / "versions" / NEW).exists()


def test_a_release_signed_by_an_untrusted_key_is_refused(
    tmp_path: Path, old_agent_base: Path, wheels: dict[str, Path], monitor: Any,
    release_key: Any, other_key: Any, sign: Any,
) -> None:
    # the monitor trusts other_key too; the agent trusts only release_key
    monitor.fleet.report(VM, OLD)
    _publish(monitor, wheels[NEW], NEW, other_key, sign)
    agent = _agent_at(old_agent_base, tmp_path, monitor.url, release_key.public_pem)
    before = snapshot(agent.root, agent.state)
    out = agent.upgrade()
    assert out.returncode == 2
    assert "release refused (unknown_key)" in out.stderr
    assert "not a trusted release key" in out.stderr
    assert snapshot(agent.root, agent.state) == before


def test_a_downgrade_is_refused_and_changes_nothing(
    tmp_path: Path, wheels: dict[str, Path], hostile: Any, release_key: Any, sign: Any
) -> None:
    box, url = hostile
    agent = make_agent(tmp_path, wheels, NEW, url, release_key.public_pem)
    box.offer = sign(wheels[OLD], OLD, release_key)  # genuinely signed, but older
    box.wheel = wheels[OLD].read_bytes()
    before = snapshot(agent.root, agent.state)
    out = agent.upgrade()
    assert out.returncode == 2
    assert "release refused (downgrade)" in out.stderr and "never taken" in out.stderr
    assert snapshot(agent.root, agent.state) == before
    assert agent.version() == f"bootwatch, version {NEW}"
