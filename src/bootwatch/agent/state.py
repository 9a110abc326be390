"""The daemon's durable state: last success, boot counter, backoff.

Kept in ``<state_dir>/agent-state.json`` and replaced atomically (write, fsync,
rename) after every cycle, so a restart (a crash loop under systemd, an
upgrade) neither floods the service nor forgets a ``Retry-After`` it was given.

The boot counter counts the boots this agent has seen: it goes up when the
kernel's boot id (``/proc/sys/kernel/random/boot_id``) differs from the one
stored.  A state file that cannot be read is moved aside
(``agent-state.json.corrupt``) with a warning and the daemon starts fresh: a
damaged file must not keep the VM from being monitored (a named leniency).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from bootwatch.errors import ConfigError

__all__ = ["BOOT_ID_PATH", "EPHEMERAL_KEY_CONTEXT", "STATE_FILE", "AgentState", "StateStore",
           "read_boot_id"]

STATE_FILE: Final = "agent-state.json"
PENDING_REPORT: Final = "pending-report.json"
#: the TPM's saved context of the current ephemeral key (bootwatch.agent.tpm); only this
#: TPM can load it, and only in the boot that made it
EPHEMERAL_KEY_CONTEXT: Final = "ephemeral-key.ctx"
BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
_MAX_STATE: Final = 64 * 1024


def read_boot_id(path: Path = BOOT_ID_PATH) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()[:64]
    except OSError:
        return ""


@dataclass(frozen=True)
class AgentState:
    """What survives a restart (times are POSIX seconds, wall clock)."""

    boot_id: str = ""
    boot_counter: int = 0
    last_attempt: float | None = None
    last_success: float | None = None
    last_health: str | None = None
    consecutive_failures: int = 0
    backoff_until: float | None = None
    cycles: int = 0

    def after_boot(self, boot_id: str) -> AgentState:
        """Count a new boot when the kernel's boot id changed."""
        if boot_id and boot_id != self.boot_id:
            return replace(self, boot_id=boot_id, boot_counter=self.boot_counter + 1)
        return self


class StateStore:
    """Reads and atomically replaces the state file in one directory."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / STATE_FILE
        self.pending_path = state_dir / PENDING_REPORT
        self.warnings: list[str] = []

    def ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise ConfigError(f"state_dir {self.dir}: cannot create it: {exc.strerror}") from None

    def load(self) -> AgentState:
        try:
            raw = self.path.read_bytes()[: _MAX_STATE + 1]
        except FileNotFoundError:
            return AgentState()
        except OSError as exc:
            raise ConfigError(f"state file {self.path}: cannot read it: {exc.strerror}") from None
        try:
            obj = json.loads(raw)
            if len(raw) > _MAX_STATE or not isinstance(obj, dict):
                raise ValueError("not a JSON object of the expected size")
            return _from_json(obj)
        except (ValueError, TypeError) as exc:
            aside = self.path.with_name(STATE_FILE + ".corrupt")
            os.replace(self.path, aside)
            self.warnings.append(
                f"state file {self.path} was unreadable ({exc}); moved to {aside}, starting fresh"
            )
            return AgentState()

    def save(self, state: AgentState) -> None:
        _atomic_write(self.path, json.dumps(asdict(state), indent=1).encode())

    def save_pending(self, body: bytes) -> None:
        """Keep an undelivered health report (the newest replaces an older one)."""
        _atomic_write(self.pending_path, body)

    def load_pending(self) -> bytes | None:
        try:
            return self.pending_path.read_bytes()[: 1024 * 1024]
        except OSError:
            return None

    def clear_pending(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pending_path.unlink()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _from_json(obj: dict[str, Any]) -> AgentState:
    def num(key: str) -> float | None:
        v = obj.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"'{key}' is not a number")
        return float(v)

    def count(key: str) -> int:
        v = obj.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"'{key}' is not a count")
        return v

    boot_id = obj.get("boot_id", "")
    health = obj.get("last_health")
    if not isinstance(boot_id, str) or (health is not None and not isinstance(health, str)):
        raise ValueError("'boot_id'/'last_health' are not strings")
    return AgentState(
        boot_id=boot_id[:64],
        boot_counter=count("boot_counter"),
        last_attempt=num("last_attempt"),
        last_success=num("last_success"),
        last_health=health,
        consecutive_failures=count("consecutive_failures"),
        backoff_until=num("backoff_until"),
        cycles=count("cycles"),
    )
