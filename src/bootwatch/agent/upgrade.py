"""The agent's signed automatic upgrade, with a rollback of its own.

Azure's extensions upgrade themselves to the latest minor version, never a
major, and roll back a VM that is unhealthy after the upgrade
(monitoring-facts section 2).  The agent does the same:

1. On its check interval it asks the monitor for an offer
   (``GET /api/v1/agent/releases/offer?vm_id=...&current=...``).  The monitor
   answers only when this VM's rollout batch is open.
2. It verifies the manifest's signature under the release key(s) of ITS OWN
   configuration (the monitor only distributes), applies the upgrade rule
   (:func:`bootwatch.protocol.release.check_upgrade`: newer only, minor and
   patch only unless ``allow_major``), refuses a version that rolled back
   recently, downloads the wheel into a temporary directory and compares
   size and SHA-256 (constant time).  Any refusal leaves the disk as it was.
3. It installs the wheel beside the running version, as a venv per version
   (``ROOT/versions/X.Y.Z``, ``--system-site-packages`` so the dependencies
   come from the system -- or, for an agent running from a venv, from that venv,
   through a ``.pth`` file -- ``pip install --no-deps --no-index WHEEL``), checks
   that the installed distribution reports the signed version, records a
   pending upgrade with a deadline in the state directory (durably, before
   the switch) and switches ``ROOT/current`` atomically (a new symlink renamed
   over the old one).  :meth:`AgentUpgrader.maybe_upgrade` then returns True
   and the daemon exits with :data:`EXIT_RESTART`; its supervisor (systemd
   ``Restart=``) starts ``ROOT/current/bin/bootwatch`` again: the new version.
4. The new version confirms the upgrade on its first successful attestation
   cycle (:meth:`AgentUpgrader.after_cycle`).  If no cycle succeeds before
   the deadline it switches ``current`` back, remembers the version as failed
   (not retried for ``retry_failed_after``) and asks for a restart the same
   way (the next :meth:`maybe_upgrade` returns True).

The upgrade only makes sense when the agent runs from ``ROOT/current``; an
agent started from anywhere else refuses to install, since the switch would
not change what runs.

A new version that cannot even start never reaches :meth:`~AgentUpgrader.after_cycle`;
for that case the upgrader keeps ``ROOT/previous`` pointing at the known-good
version, and the service unit runs ``ROOT/previous/bin/bootwatch agent upgrade
--rollback-expired`` before each start (``ExecStartPre=-``,
:meth:`AgentUpgrader.rollback_if_expired`).  That guard counts the starts of the
pending version in the pending record and switches back before the start that
would exceed ``max_unconfirmed_starts`` (3: a release that crashes at start-up is
rolled back before its 4th start, about two minutes after the switch with
``RestartSec=30``, not after the whole deadline), or once the deadline has passed,
whichever comes first.  The
unit must keep restarting a crashing agent (``Restart=on-failure`` with
``StartLimitIntervalSec=0`` or a ``RestartSec`` long enough) for that pre-start
check to run.  The guard is the *previous* version's code: the first upgrade away
from a version without the start count is protected by the deadline only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.metadata
import json
import logging
import math
import os
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlencode, urlsplit

import httpx

from bootwatch.agent.proxy import choose_proxy
from bootwatch.agent.transport import BODY_DEADLINE_FACTOR
from bootwatch.errors import BootwatchError, ConfigError, StorageError, TransportError
from bootwatch.httpdeadline import Bound, SocketWatch
from bootwatch.protocol.release import (
    MAX_MANIFEST_BYTES,
    PublicReleaseKey,
    RefusalReason,
    ReleaseManifest,
    ReleaseRefusedError,
    check_upgrade,
    decode_signed_release,
    load_public_key,
    verify_release,
)

__all__ = [
    "EXIT_RESTART",
    "INHERITED",
    "AgentUpgrader",
    "OutcomeKind",
    "UpgradeConfig",
    "UpgradeHook",
    "UpgradeInstallError",
    "UpgradeOutcome",
    "install_version",
    "parse_upgrade_config",
    "switch_current",
    "with_inherited",
]

#: the daemon's exit code asking its supervisor for a restart (EX_TEMPFAIL)
EXIT_RESTART: Final = 75
STATE_FILE: Final = "upgrade.json"
#: marker written last into a versioned directory: the install is complete
COMPLETE_MARKER: Final = ".bootwatch-release.json"
_OFFER_PATH: Final = "/api/v1/agent/releases/offer"
#: the slowest download the wheel's deadline allows for (bytes per second): 64 MiB, the
#: largest wheel by default, in about 35 minutes; a real wheel of about 1 MB in a minute
MIN_DOWNLOAD_RATE: Final = 32 * 1024
_log = logging.getLogger("bootwatch.agent.upgrade")


class UpgradeHook(Protocol):
    """What the daemon calls around its cycles (the daemon module defines the same)."""

    def after_cycle(self, succeeded: bool) -> None: ...

    def maybe_upgrade(self, next_chance: float | None = None,
                      keepalive: Callable[[], None] | None = None) -> bool: ...


class UpgradeInstallError(BootwatchError):
    """A verified release that could not be installed (venv, pip, disk)."""

    code = "upgrade_install_failed"


# --- configuration -----------------------------------------------------------


@dataclass(frozen=True)
class UpgradeConfig:
    """The ``[upgrade]`` table of the agent's configuration."""

    monitor_url: str
    release_public_keys: tuple[Path, ...]
    install_root: Path = Path("/opt/bootwatch")
    state_dir: Path = Path("/var/lib/bootwatch")
    enabled: bool = True
    check_interval: float = 3600.0
    rollback_deadline: float = 900.0
    #: starts of a pending version without a successful cycle before the pre-start
    #: guard rolls it back (the Nth start is allowed; the guard before start N+1 rolls back)
    max_unconfirmed_starts: int = 3
    retry_failed_after: float = 86400.0
    allow_major: bool = False
    allow_prerelease: bool = False
    vm_id: str | None = None
    ca: Path | None = None
    timeout: float = 30.0
    max_wheel_bytes: int = 64 * 1024 * 1024
    #: the interpreter that creates the per-version venvs (default: the running one's base)
    python: Path | None = None
    #: the proxy to the monitor and the hosts that bypass it (as the agent's top-level
    #: ``proxy`` / ``no_proxy``: libcurl's rules, the environment when unset)
    proxy: str | None = None
    no_proxy: str | None = None
    #: keys of the table this version does not know (kept, warned about)
    unknown_keys: tuple[str, ...] = field(default=())


_KNOWN: Final = frozenset({
    "monitor_url", "release_public_key", "install_root", "state_dir", "enabled",
    "check_interval", "rollback_deadline", "max_unconfirmed_starts", "retry_failed_after",
    "allow_major", "allow_prerelease", "vm_id", "ca", "timeout", "max_wheel_bytes", "python",
    "proxy", "no_proxy",
})

#: keys of ``[upgrade]`` that fall back to the agent's top-level settings: (upgrade key,
#: top-level keys tried in order).  The monitor's CA is the upgrade's CA before the
#: provider's: the upgrade talks to the monitor.
INHERITED: Final = (
    ("monitor_url", ("monitor_url",)),
    ("vm_id", ("vm_id",)),
    ("state_dir", ("state_dir",)),
    ("ca", ("monitor_ca", "ca")),
    ("proxy", ("proxy",)),
    ("no_proxy", ("no_proxy",)),
)


def with_inherited(table: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` with each key of :data:`INHERITED` it lacks taken from ``top`` (the
    agent's top-level settings).  Why one function: the daemon's checks and ``bootwatch
    agent upgrade`` (the unit's pre-start guard among them) must read the same
    ``upgrade.json`` and reach the monitor the same way."""
    merged = dict(table)
    for key, sources in INHERITED:
        if merged.get(key) is not None:
            continue
        for source in sources:
            value = top.get(source)
            if value is not None and value != "":
                merged[key] = str(value) if isinstance(value, Path) else value
                break
    return merged


def parse_upgrade_config(table: Mapping[str, Any], *, source: str) -> UpgradeConfig:
    """Build the config from a TOML table; :class:`ConfigError` names the key and ``source``."""

    def where(key: str) -> str:
        return f"{source}: [upgrade] {key}"

    def path(key: str, default: Path | None) -> Path | None:
        value = table.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where(key)}: expected a path string")
        return Path(value)

    def seconds(key: str, default: float, minimum: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value
        ):
            raise ConfigError(f"{where(key)}: expected a number of seconds")
        if value < minimum:
            raise ConfigError(f"{where(key)}: must be at least {minimum} seconds")
        return float(value)

    def flag(key: str, default: bool) -> bool:
        value = table.get(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"  # Azure-style string booleans
        if not isinstance(value, bool):
            raise ConfigError(f"{where(key)}: expected true or false")
        return value

    def count(key: str, default: int, minimum: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where(key)}: expected a whole number, got {value!r}")
        if value < minimum:
            raise ConfigError(f"{where(key)}: must be at least {minimum}, got {value}")
        return value

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where(key)}: expected a string")
        return value or None

    url = table.get("monitor_url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(
        url
    ).hostname:
        raise ConfigError(f"{where('monitor_url')}: expected the monitor's http(s) URL")
    keys_value = table.get("release_public_key")
    keys_list = [keys_value] if isinstance(keys_value, str) else keys_value
    if (
        not isinstance(keys_list, list) or not keys_list
        or not all(isinstance(k, str) and k for k in keys_list)
    ):
        raise ConfigError(
            f"{where('release_public_key')}: expected the path (or a list of paths) of the "
            "release public key(s) this agent trusts"
        )
    vm_id = table.get("vm_id")
    if vm_id is not None and (not isinstance(vm_id, str) or not vm_id):
        raise ConfigError(f"{where('vm_id')}: expected a string")
    max_wheel = table.get("max_wheel_bytes", 64 * 1024 * 1024)
    if isinstance(max_wheel, bool) or not isinstance(max_wheel, int) or max_wheel < 1024:
        raise ConfigError(f"{where('max_wheel_bytes')}: expected an integer >= 1024")
    unknown = tuple(sorted(set(table) - _KNOWN))
    for key in unknown:
        _log.warning("%s: unknown key, ignored", where(key))
    return UpgradeConfig(
        monitor_url=url.rstrip("/"),
        release_public_keys=tuple(Path(k) for k in keys_list),
        install_root=path("install_root", Path("/opt/bootwatch")) or Path("/opt/bootwatch"),
        state_dir=path("state_dir", Path("/var/lib/bootwatch")) or Path("/var/lib/bootwatch"),
        enabled=flag("enabled", True),
        check_interval=seconds("check_interval", 3600.0, 1.0),
        rollback_deadline=seconds("rollback_deadline", 900.0, 0.0),
        max_unconfirmed_starts=count("max_unconfirmed_starts", 3, 1),
        retry_failed_after=seconds("retry_failed_after", 86400.0, 0.0),
        allow_major=flag("allow_major", False),
        allow_prerelease=flag("allow_prerelease", False),
        vm_id=vm_id,
        ca=path("ca", None),
        timeout=seconds("timeout", 30.0, 0.1),
        max_wheel_bytes=max_wheel,
        python=path("python", None),
        proxy=text("proxy"),
        no_proxy=text("no_proxy"),
        unknown_keys=unknown,
    )


# --- outcomes ----------------------------------------------------------------


class OutcomeKind(StrEnum):
    """What one upgrade check did."""

    DISABLED = "disabled"
    NOT_DUE = "not_due"
    PENDING = "pending"  # an installed upgrade awaits its first successful cycle
    NO_OFFER = "no_offer"
    OFFERED = "offered"  # verified and acceptable; not installed (check only)
    REFUSED = "refused"
    INSTALLED = "installed"
    ROLLED_BACK = "rolled_back"
    ERROR = "error"


@dataclass(frozen=True)
class UpgradeOutcome:
    """One check's result, with a sentence a person can act on."""

    kind: OutcomeKind
    message: str
    version: str | None = None
    reason: RefusalReason | None = None


# --- disk: state, atomic switch, install ---------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def switch_current(root: Path, target: Path, *, name: str = "current") -> None:
    """Point ``ROOT/NAME`` at ``target`` atomically (a new symlink renamed over the old)."""
    link = root / name
    relative = os.path.relpath(target, root)
    tmp = root / f".{name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(relative, tmp)
        os.replace(tmp, link)
        _fsync_dir(root)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot switch {link} to {target}: {exc}") from None


def _run(argv: list[str], what: str, timeout: float = 600.0) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpgradeInstallError(f"{what}: {exc}") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise UpgradeInstallError(
            f"{what} failed with exit code {done.returncode}: {' / '.join(tail)}"
        )
    return done.stdout


def _nothing() -> None:
    """The keep-alive of a caller that needs none."""


def install_version(
    root: Path, wheel: Path, version: str, *, python: Path | None = None,
    marker: bytes = b"{}", keepalive: Callable[[], None] | None = None,
) -> Path:
    """Install ``wheel`` as ``ROOT/versions/VERSION`` (a venv); the directory, once complete.

    A leftover incomplete directory of the same version is removed first; the
    installed distribution must report ``version`` or the directory is removed
    and :class:`UpgradeInstallError` raised.  ``current`` is not touched.
    """
    versions = root / "versions"
    target = versions / version
    base: str = getattr(sys, "_base_executable", sys.executable)
    interpreter = str(python) if python is not None else base
    try:
        versions.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            shutil.rmtree(target)
    except OSError as exc:
        raise UpgradeInstallError(f"cannot prepare {target}: {exc}") from None
    try:
        (keepalive or _nothing)()
        _run([interpreter, "-m", "venv", "--system-site-packages", "--without-pip", str(target)],
             f"creating the venv {target}")
        venv_python = str(target / "bin" / "python")
        (keepalive or _nothing)()
        _run([venv_python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
              str(wheel)], f"pip install {wheel.name}")
        _share_running_dependencies(target)
        (keepalive or _nothing)()
        installed = _run(
            [venv_python, "-I", "-c",
             "import importlib.metadata as m; print(m.version('bootwatch'))"],
            "reading the installed version",
        ).strip()
        if installed != version:
            raise UpgradeInstallError(
                f"the wheel installed bootwatch {installed!r}, but its signed manifest says "
                f"{version}; refusing it"
            )
        if not (target / "bin" / "bootwatch").exists():
            raise UpgradeInstallError(f"{target}/bin/bootwatch is missing after the install")
        _atomic_write(target / COMPLETE_MARKER, marker)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def _share_running_dependencies(target: Path) -> None:
    """When this agent runs from a virtual environment (``pip install`` into a venv, as
    scripts/setup does), its dependencies are there, not in the system's site-packages
    that ``--system-site-packages`` exposes: a ``.pth`` file puts the running
    environment's site-packages after the new version's own, so the new version (its
    own ``bootwatch`` first on the path) runs with the dependencies the old one had."""
    base = (os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix))
    # every site directory this process imports from, outside the base installation
    # (which --system-site-packages shows anyway); a chain of upgrades keeps the chain
    running = [p for p in dict.fromkeys(sys.path)
               if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)
               and not os.path.realpath(p).startswith(base)]
    if not running:
        return
    sites = sorted(target.glob("lib/python*/site-packages"))
    if not sites:
        raise UpgradeInstallError(f"{target} has no site-packages after creating the venv")
    try:
        _atomic_write(sites[0] / "_bootwatch_running_env.pth",
                      ("\n".join(running) + "\n").encode())
    except OSError as exc:
        raise UpgradeInstallError(f"cannot write {sites[0]}: {exc}") from None


@dataclass
class _State:
    """The persisted upgrade state (``STATE_DIR/upgrade.json``)."""

    pending: dict[str, Any] | None = None
    failed: dict[str, float] = field(default_factory=dict)
    last_confirmed: dict[str, Any] | None = None
    last_rollback: dict[str, Any] | None = None


def _load_state(path: Path) -> _State:
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        return _State()
    except (OSError, ValueError) as exc:
        raise StorageError(f"{path}: unreadable upgrade state: {exc}") from None
    if not isinstance(obj, dict):
        raise StorageError(f"{path}: unreadable upgrade state: not a JSON object")
    pending = obj.get("pending")
    if pending is not None and not (
        isinstance(pending, dict)
        and isinstance(pending.get("version"), str)
        and isinstance(pending.get("previous_target"), str)
        and isinstance(pending.get("deadline"), int | float)
    ):
        raise StorageError(f"{path}: pending: expected version, previous_target and deadline")
    if pending is not None and "starts" in pending and not _is_count(pending["starts"]):
        raise StorageError(f"{path}: pending.starts: expected a whole number >= 0, got "
                           f"{pending['starts']!r}; delete the key to count from 0")
    failed = obj.get("failed", {})
    if not isinstance(failed, dict) or not all(
        isinstance(v, int | float) for v in failed.values()
    ):
        raise StorageError(f"{path}: failed: expected version -> time")
    return _State(
        pending=pending, failed={str(k): float(v) for k, v in failed.items()},
        last_confirmed=obj.get("last_confirmed"), last_rollback=obj.get("last_rollback"),
    )


def _is_count(value: object) -> bool:
    """A JSON whole number >= 0 (``true`` is an int to Python, not a count)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _starts(pending: Mapping[str, Any]) -> int:
    """How often the pre-start guard has let the pending version start.  A record written
    before the guard counted starts has no ``starts``: it counts from 0, so an upgrade
    pending across the agent's own upgrade is judged as a fresh one, never rolled back
    for starts it cannot know about."""
    value = pending.get("starts", 0)
    return value if _is_count(value) else 0


def _save_state(path: Path, state: _State) -> None:
    body = {
        "pending": state.pending, "failed": state.failed,
        "last_confirmed": state.last_confirmed, "last_rollback": state.last_rollback,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, json.dumps(body, indent=1, sort_keys=True).encode())
    except OSError as exc:
        raise StorageError(f"{path}: cannot write upgrade state: {exc}") from None


# --- the upgrader --------------------------------------------------------------


def _running_version() -> str:
    return importlib.metadata.version("bootwatch")


class AgentUpgrader:
    """The daemon's :class:`UpgradeHook`: checks, verifies, installs, confirms, rolls back."""

    def __init__(
        self,
        config: UpgradeConfig,
        *,
        vm_id: str | None = None,
        running_version: str | None = None,
        running_prefix: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.vm_id = vm_id or config.vm_id
        if not self.vm_id:
            raise ConfigError("[upgrade] vm_id: the VM id is needed to ask for an offer")
        self.running_version = running_version or _running_version()
        self.running_prefix = (running_prefix or Path(sys.prefix)).resolve()
        self.clock = clock
        self.keys = self._load_keys()
        self.state_path = config.state_dir / STATE_FILE
        self.restart_requested = False
        self.last_outcome: UpgradeOutcome | None = None
        self._next_check = 0.0
        self._keepalive: Callable[[], None] = _nothing
        #: the client's sockets, to cut a request off at its whole deadline
        self._watch = SocketWatch()
        verify: ssl.SSLContext | bool = True
        if config.ca is not None:
            verify = ssl.create_default_context(cafile=str(config.ca))
        # the monitor is reached through the proxy the health reports use (libcurl's rules,
        # bootwatch.agent.proxy), not httpx's own reading of the environment (trust_env),
        # which takes an upper-case HTTP_PROXY and ignores the never-proxied addresses
        try:
            proxy = choose_proxy(config.monitor_url, configured=config.proxy,
                                 configured_no_proxy=config.no_proxy, environ=os.environ).url
        except ConfigError as exc:  # a malformed proxy variable must not stop the agent
            _log.warning("upgrade checks go without a proxy: %s", exc)
            proxy = None
        self._http = httpx.Client(verify=verify, timeout=config.timeout, follow_redirects=False,
                                  proxy=proxy, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def _load_keys(self) -> tuple[PublicReleaseKey, ...]:
        keys = []
        for path in self.config.release_public_keys:
            try:
                pem = path.read_bytes()[: 64 * 1024]
            except OSError as exc:
                raise ConfigError(
                    f"[upgrade] release_public_key: cannot read {path}: {exc.strerror}"
                ) from None
            try:
                keys.append(load_public_key(pem, str(path)))
            except BootwatchError as exc:
                raise ConfigError(f"[upgrade] release_public_key: {exc}") from None
        return tuple(keys)

    # --- the UpgradeHook protocol ----------------------------------------------

    def after_cycle(self, succeeded: bool) -> None:
        """Confirm a pending upgrade on success; roll it back once its deadline has passed."""
        state = _load_state(self.state_path)
        pending = state.pending
        if pending is None or self.restart_requested:
            return
        now = self.clock()
        version = str(pending["version"])
        if self.running_version != version:
            # a fresh process that is not the new version: the switch did not take effect
            link = self.config.install_root / "current"
            previous = self.config.install_root / str(pending["previous_target"])
            if link.resolve() == previous.resolve():
                why = f"the switch to {version} was interrupted before it happened"
            else:
                why = (f"the agent restarted as {self.running_version}, not {version}: the "
                       f"supervisor must start {link}/bin/bootwatch")
            self._rollback(state, now, why, restart=False)
            return
        if succeeded:
            state.pending = None
            state.failed.pop(version, None)
            state.last_confirmed = {"version": version, "at": now}
            _save_state(self.state_path, state)
            self._prune(keep={version, str(pending.get("previous_version", ""))})
            self.last_outcome = UpgradeOutcome(
                OutcomeKind.INSTALLED, f"upgrade to {version} confirmed by a successful cycle",
                version,
            )
            _log.info("upgrade to %s confirmed", version)
            return
        if now >= float(pending["deadline"]):
            self._rollback(state, now, f"no successful attestation cycle on {version} within "
                           f"{self.config.rollback_deadline:g} s", restart=True)

    def pending_deadline(self) -> float | None:
        """When the running version's pending upgrade must have confirmed a successful
        cycle (None: nothing pending for this version, or a rollback already asked for).

        Why: the daemon waits a whole interval (an hour by default) after a failed cycle;
        without this it would judge an Unhealthy new version only then, long past the
        rollback deadline.  It wakes at the deadline instead, runs one more cycle, and
        :meth:`after_cycle` rolls back if that one fails too."""
        if self.restart_requested:
            return None
        try:
            pending = _load_state(self.state_path).pending
        except BootwatchError:
            return None  # after_cycle reports an unreadable state file
        if pending is None or str(pending.get("version")) != self.running_version:
            return None
        try:
            return float(pending["deadline"])
        except (KeyError, TypeError, ValueError):
            return None

    def rollback_if_expired(self) -> UpgradeOutcome | None:
        """Before a start: roll a pending upgrade back if its deadline has passed or it
        has already been started ``max_unconfirmed_starts`` times; else count this start.

        For a new version that cannot even start (so never reaches
        :meth:`after_cycle`): the unit runs this from the known-good version,
        ``ROOT/previous/bin/bootwatch agent upgrade --rollback-expired``, as
        ``ExecStartPre``, before EVERY start, the first one after the switch included.
        Why count: a release that crashes at start-up is restarted by the supervisor
        every ``RestartSec``; waiting for the deadline alone left the VM without an agent
        for the whole of it (15 minutes by default).  So the guard before start N
        records N in the pending record (durably, before that start), and the guard
        before start N+1 rolls back, N being ``max_unconfirmed_starts``.  A start is
        counted only when ``current`` points at the pending version (after an
        interrupted switch the old version starts, and rolls the record back itself on
        its first cycle).  Returns the rollback's outcome, or None.
        """
        state = _load_state(self.state_path)
        pending = state.pending
        if pending is None:
            return None
        now = self.clock()
        version = str(pending["version"])
        if now >= float(pending["deadline"]):
            self._rollback(state, now, f"{version} had not confirmed a successful cycle "
                           f"within {self.config.rollback_deadline:g} s (checked before a "
                           "start)", restart=False)
            return self.last_outcome
        if not self._current_is(version):
            return None
        starts = _starts(pending)
        limit = self.config.max_unconfirmed_starts
        if starts >= limit:
            self._rollback(state, now, self._crash_loop_reason(version, starts), restart=False)
            return self.last_outcome
        pending["starts"] = starts + 1
        _save_state(self.state_path, state)
        _log.info("starting %s, pending upgrade: start %d of at most %d without a "
                  "successful cycle", version, starts + 1, limit)
        return None

    def _current_is(self, version: str) -> bool:
        """Whether ``ROOT/current`` runs ``version`` (where :func:`install_version` put
        it): only then is the start the guard precedes a start of the pending version."""
        root = self.config.install_root
        return (root / "current").resolve() == (root / "versions" / version).resolve()

    def _crash_loop_reason(self, version: str, starts: int) -> str:
        """Why a version that never finished a cycle was rolled back before a start: what
        happened, where to look and when it is retried (the rollback message and
        ``last_rollback.reason`` of ``upgrade.json``)."""
        times = "once" if starts == 1 else f"{starts} times"
        return (f"{version} was started {times} without completing a successful "
                f"attestation cycle (max_unconfirmed_starts = "
                f"{self.config.max_unconfirmed_starts}): it fails before its first cycle; "
                "its start-up errors are in the service's journal (journalctl -u "
                f"bootwatch-agent); it is not taken again for "
                f"{self.config.retry_failed_after:g} s")

    def maybe_upgrade(self, next_chance: float | None = None,
                      keepalive: Callable[[], None] | None = None) -> bool:
        """Check and install when due; True when ``current`` was switched and a restart is due.

        ``keepalive`` is called while a download or an install step goes on (the daemon's
        heartbeat and systemd watchdog keep-alive: a long download must not look like a
        hang).

        ``next_chance`` is when the caller will ask again (the daemon's next cycle).  A
        check not yet due runs now when now is nearer its due time than that next chance:
        the daemon asks once a cycle, so with the default check interval equal to the
        cycle interval a check due a few seconds after this cycle used to wait a whole
        cycle more, and a fleet's agents took up to two cycles (about 7,900 s) to see an
        offer, past the rollout's 2 h ``upgrade_timeout``: healthy agents counted as failed
        and a small fleet's rollout halted (found in review)."""
        if self.restart_requested:
            return True
        now = self.clock()
        # early only when the next chance comes later than the due time, and further past
        # it than now is before it (a next chance already past, as after "Retry-After: 0",
        # is no reason to check early; found in review)
        if now < self._next_check and (
                next_chance is None
                or next_chance - self._next_check <= self._next_check - now):
            return False
        jitter = random.uniform(0.0, 0.1 * self.config.check_interval)
        self._next_check = now + self.config.check_interval + jitter
        self._keepalive = keepalive or _nothing
        try:
            outcome = self.run_check(apply=True)
        finally:
            self._keepalive = _nothing
        return outcome.kind is OutcomeKind.INSTALLED and self.restart_requested

    # --- checks ----------------------------------------------------------------

    def run_check(self, *, apply: bool) -> UpgradeOutcome:
        """One check now (``apply``: install when acceptable); never raises BootwatchError
        or OSError.  Why OSError too: a full disk while downloading or installing, or a
        directory where the ``current`` link should be, escaped as a traceback that ended
        the daemon, and the check ran first thing after each restart, so the agent never
        attested again (found in review)."""
        try:
            outcome = self._check(apply=apply)
        except ReleaseRefusedError as exc:
            outcome = UpgradeOutcome(OutcomeKind.REFUSED, exc.message, None, exc.reason)
        except BootwatchError as exc:
            outcome = UpgradeOutcome(OutcomeKind.ERROR, str(exc))
        except OSError as exc:
            outcome = UpgradeOutcome(
                OutcomeKind.ERROR,
                f"local file error: {exc.strerror or exc} "
                f"({exc.filename or 'the install root or state directory'})")
        self.last_outcome = outcome
        level = logging.WARNING if outcome.kind in (OutcomeKind.REFUSED, OutcomeKind.ERROR) \
            else logging.INFO
        _log.log(level, "upgrade check: %s: %s", outcome.kind.value, outcome.message)
        return outcome

    def _check(self, *, apply: bool) -> UpgradeOutcome:
        if not self.config.enabled:
            return UpgradeOutcome(OutcomeKind.DISABLED, "automatic upgrade is disabled")
        state = _load_state(self.state_path)
        if state.pending is not None:
            return UpgradeOutcome(
                OutcomeKind.PENDING,
                f"the upgrade to {state.pending['version']} awaits a successful cycle",
                str(state.pending["version"]),
            )
        body = self._fetch_offer()
        if body is None:
            return UpgradeOutcome(OutcomeKind.NO_OFFER, "the monitor offers no release now")
        manifest = verify_release(decode_signed_release(body), self.keys)
        verdict = check_upgrade(
            self.running_version, manifest, allow_major=self.config.allow_major,
            allow_prerelease=self.config.allow_prerelease,
        )
        if not verdict.allowed:
            assert verdict.reason is not None
            raise ReleaseRefusedError(verdict.message, reason=verdict.reason)
        failed_at = state.failed.get(manifest.version)
        if failed_at is not None and self.clock() < failed_at + self.config.retry_failed_after:
            raise ReleaseRefusedError(
                f"{manifest.version} was rolled back at {time.ctime(failed_at)}; it is retried "
                f"{self.config.retry_failed_after:g} s later",
                reason=RefusalReason.RECENTLY_FAILED,
            )
        if not apply:
            return UpgradeOutcome(
                OutcomeKind.OFFERED,
                f"{manifest.version} is offered, signed by a trusted key and acceptable",
                manifest.version,
            )
        current_link = self.config.install_root / "current"
        if current_link.resolve() != self.running_prefix:
            raise UpgradeInstallError(
                f"this agent runs from {self.running_prefix}, not from {current_link}: "
                "an upgrade would not change what runs; start the agent as "
                f"{current_link}/bin/bootwatch"
            )
        previous_target = os.readlink(current_link)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=self._download_parent()) as tmp:
            wheel = Path(tmp) / manifest.wheel
            self._download_wheel(manifest, wheel)
            target = install_version(
                self.config.install_root, wheel, manifest.version, python=self.config.python,
                marker=body, keepalive=self._keepalive,
            )
        state.pending = {
            "version": manifest.version,
            "previous_version": self.running_version,
            "previous_target": previous_target,
            "deadline": self.clock() + self.config.rollback_deadline,
            "installed_at": self.clock(),
            # starts let through by the pre-start guard (rollback_if_expired); the
            # supervisor's first start of the new version is counted by it, too
            "starts": 0,
        }
        _save_state(self.state_path, state)
        # ROOT/previous names the known-good version for the pre-start guard (see module doc)
        switch_current(self.config.install_root, self.config.install_root / previous_target,
                       name="previous")
        switch_current(self.config.install_root, target)
        self.restart_requested = True
        return UpgradeOutcome(
            OutcomeKind.INSTALLED,
            f"installed {manifest.version} in {target} and switched {current_link} to it; "
            f"restart due, rollback after {self.config.rollback_deadline:g} s without a "
            "successful cycle",
            manifest.version,
        )

    def _download_parent(self) -> Path:
        try:
            self.config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.config.state_dir}: {exc.strerror}") from None
        return self.config.state_dir

    # --- HTTP ------------------------------------------------------------------

    def _get(self, url: str) -> contextlib.AbstractContextManager[httpx.Response]:
        return self._http.stream("GET", url, extensions={"trace": self._watch.trace})

    def _transport_error(self, url: str, exc: httpx.HTTPError) -> TransportError:
        if isinstance(exc, httpx.TimeoutException):
            return TransportError(f"GET {url}: timed out", step="timeout")
        if isinstance(exc, httpx.ConnectError):
            return TransportError(f"GET {url}: {exc}", step="tcp_connect")
        return TransportError(f"GET {url}: {exc}", step="protocol")

    def _fetch_offer(self) -> bytes | None:
        query = {"vm_id": self.vm_id or "", "current": self.running_version}
        if self.config.allow_major:
            query["major"] = "true"
        url = f"{self.config.monitor_url}{_OFFER_PATH}?{urlencode(query)}"
        # the whole request, headers included (bootwatch.httpdeadline): the body deadline
        # below starts only once the headers are in, and a peer trickling them held the
        # daemon's check for ever (found in review)
        whole = (BODY_DEADLINE_FACTOR + 1) * self.config.timeout
        with self._watch.bound(whole) as bound:
            try:
                return self._read_offer(url)
            except TransportError:
                if bound.passed:
                    raise TransportError(f"GET {url}: no complete answer within {whole:g} s",
                                         step="timeout") from None
                raise

    def _read_offer(self, url: str) -> bytes | None:
        try:
            with self._get(url) as resp:
                if resp.status_code == 204:
                    return None
                if resp.status_code != 200:
                    raise TransportError(
                        f"GET {url}: HTTP {resp.status_code}", step="http_status"
                    )
                # httpx's timeout bounds each read, not the body: a monitor (or whatever
                # answers at its address) sending a byte now and then held the daemon's
                # upgrade check, and with it every later attestation, for as long as it
                # kept sending (found in review)
                allowed = BODY_DEADLINE_FACTOR * self.config.timeout
                deadline = time.monotonic() + allowed
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > MAX_MANIFEST_BYTES:
                        raise TransportError(
                            f"GET {url}: offer larger than {MAX_MANIFEST_BYTES} bytes",
                            step="protocol",
                        )
                    if time.monotonic() > deadline:
                        raise TransportError(
                            f"GET {url}: the offer took longer than {allowed:g} s in all",
                            step="timeout")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise self._transport_error(url, exc) from None

    def _download_wheel(self, manifest: ReleaseManifest, dest: Path) -> None:
        if manifest.size > self.config.max_wheel_bytes:
            raise ReleaseRefusedError(
                f"the wheel is {manifest.size} bytes, over max_wheel_bytes "
                f"({self.config.max_wheel_bytes})", reason=RefusalReason.SIZE_MISMATCH,
            )
        url = f"{self.config.monitor_url}/api/v1/agent/releases/{manifest.version}/wheel"
        digest = hashlib.sha256()
        # a deadline for the whole download (as the offer's), with time for the signed size
        # at MIN_DOWNLOAD_RATE: a trickling peer cannot hold the daemon for ever
        allowed = BODY_DEADLINE_FACTOR * self.config.timeout + manifest.size / MIN_DOWNLOAD_RATE
        deadline = time.monotonic() + allowed
        # the headers within the offer's bound; the body within ``allowed``, checked per
        # chunk below (each chunk comes within a read timeout; the keep-alive runs per
        # chunk, so only the headers must come before the watchdog's 15 minutes)
        head = (BODY_DEADLINE_FACTOR + 1) * self.config.timeout
        bounds: list[Bound] = []
        try:
            self._read_wheel(url, manifest, dest, deadline, allowed, digest, head, bounds)
        except TransportError:
            if any(b.passed for b in bounds):
                raise TransportError(
                    f"GET {url}: no complete answer within {bounds[-1].seconds:g} s",
                    step="timeout") from None
            raise

    def _read_wheel(self, url: str, manifest: ReleaseManifest, dest: Path, deadline: float,
                    allowed: float, digest: Any, head: float, bounds: list[Bound]) -> None:
        size = 0
        try:
            with contextlib.ExitStack() as stack:
                with self._watch.bound(head) as headers:
                    bounds.append(headers)
                    resp = stack.enter_context(self._get(url))
                fh = stack.enter_context(dest.open("wb"))
                if resp.status_code != 200:
                    raise TransportError(f"GET {url}: HTTP {resp.status_code}",
                                         step="http_status")
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > manifest.size:
                        raise ReleaseRefusedError(
                            f"the wheel served by {url} is larger than the signed size "
                            f"{manifest.size}", reason=RefusalReason.SIZE_MISMATCH,
                        )
                    if time.monotonic() > deadline:
                        raise TransportError(
                            f"GET {url}: the wheel took longer than {allowed:g} s in all "
                            f"(its signed size at {MIN_DOWNLOAD_RATE // 1024} KiB/s)",
                            step="timeout")
                    digest.update(chunk)
                    fh.write(chunk)
                    self._keepalive()
        except httpx.HTTPError as exc:
            raise self._transport_error(url, exc) from None
        if size != manifest.size:
            raise ReleaseRefusedError(
                f"the wheel served by {url} is {size} bytes, the signed size is {manifest.size}",
                reason=RefusalReason.SIZE_MISMATCH,
            )
        if not hmac.compare_digest(digest.hexdigest(), manifest.sha256):
            raise ReleaseRefusedError(
                f"the wheel served by {url} has SHA-256 {digest.hexdigest()}, the signed "
                f"manifest says {manifest.sha256}: tampered or corrupted",
                reason=RefusalReason.HASH_MISMATCH,
            )

    # --- rollback ------------------------------------------------------------------

    def _rollback(self, state: _State, now: float, why: str, *, restart: bool) -> None:
        assert state.pending is not None
        version = str(state.pending["version"])
        previous = self.config.install_root / str(state.pending["previous_target"])
        link = self.config.install_root / "current"
        if link.resolve() != previous.resolve():
            switch_current(self.config.install_root, previous)
        state.failed[version] = now
        state.last_rollback = {"version": version, "at": now, "reason": why}
        state.pending = None
        _save_state(self.state_path, state)
        self.restart_requested = restart
        message = f"rolled back from {version} to {previous.name}: {why}"
        self.last_outcome = UpgradeOutcome(OutcomeKind.ROLLED_BACK, message, version)
        _log.warning("%s", message)

    def _prune(self, keep: set[str]) -> None:
        versions = self.config.install_root / "versions"
        try:
            entries = list(versions.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.name not in keep and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
