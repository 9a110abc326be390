"""The fleet simulator: N lab VMs running the real agent daemon against a deployment,
scripted drift, and a report of what the monitor saw against what happened.

Why threads.  Every VM runs :class:`bootwatch.agent.daemon.AgentDaemon` itself
(its cycle, backoff, state file, report delivery), each in a thread of this
process with ``cycle_in_child`` off.  A process per VM would cost ~40 MB of
Python each (20 GB for 500); the daemon's work is mostly waiting (its sleep,
swtpm, the network), so threads cost little and let the simulator observe each
cycle (:class:`_ObservedDaemon` records the daemon's own ``CycleResult``).

vTPMs.  Every VM is its own lab VM (own EK, AIK, VM id, PCRs, log).  Up to
``DEDICATED_MAX`` VMs each keep their swtpm running for the daemon's life,
exactly as ``bootwatch agent run --lab-vm`` does.  Above that (or with
``vtpm_pool``), VMs share a pool of swtpm *processes*: a VM's swtpm is started
from its own saved state for each cycle and stopped after it, at most
``vtpm_pool`` at a time.  Identities are never shared (the monitor knows a VM
by its AIK certificate, so sharing one would merge VMs); what is shared is the
process slots, so cycles wait for a slot and pay the swtpm start/stop.

Ground truth.  The simulator knows when it broke what, and which cycles
reached the service; from that it derives the alerts the monitor must raise
(``EXPECTED_REASON``) and reads the monitor's alerts through its API.  See
docs/lab.md, "Fleet simulator", for the matching rules and the report's keys.
"""

from __future__ import annotations

import logging
import random
import shutil
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import httpx

from bootwatch.agent.attestation import Verdict
from bootwatch.agent.config import AgentConfig, LoadedConfig
from bootwatch.agent.daemon import AgentDaemon, CycleResult, _Target
from bootwatch.agent.errors import PlatformError
from bootwatch.errors import BootwatchError, ConfigError, LabError, TransportError
from bootwatch.lab.drift import apply_dbx_update
from bootwatch.lab.lab import Lab
from bootwatch.lab.scenario import Action, Scenario, ScenarioError

__all__ = [
    "DEDICATED_MAX",
    "EXPECTED_REASON",
    "LATE",
    "Cause",
    "FalseAlert",
    "FleetConfig",
    "FleetReport",
    "FleetSimulator",
    "run_fleet",
]

log = logging.getLogger("bootwatch.lab.fleet")

#: up to this many VMs, each keeps its own swtpm running (above: a pool of processes)
DEDICATED_MAX: Final = 300
#: the pool size used above DEDICATED_MAX when none is given
DEFAULT_POOL: Final = 64
#: the alert each action must cause
EXPECTED_REASON: Final = {
    Action.IMAGE_UPDATE: "baseline_deviation",
    Action.DBX_UPDATE: "baseline_deviation",
    Action.SECURE_BOOT_OFF: "policy_denied",
    Action.TAMPER: "evidence_rejected",
    Action.AGENT_DOWN: "agent_unresponsive",
    Action.NETWORK_DOWN: "agent_unresponsive",
}
#: the action named for a silence no scripted outage explains (the agent fell behind)
LATE: Final = "agent_late"
#: the monitor API's timestamps are whole seconds (truncated)
_CLOCK_SLACK: Final = 1.0
_REACHED: Final = frozenset({Verdict.PERMIT, Verdict.DENY, Verdict.REFUSED,
                             Verdict.UNSEALED_FAILED, Verdict.TOKEN_INVALID})


@dataclass(frozen=True)
class FleetConfig:
    """One run; built at the edge (the CLI or a benchmark)."""

    vms: int
    interval: float
    duration: float
    url: str
    admin_token: str
    scenario: Scenario
    corpus: Path
    lab_dir: Path
    work_dir: Path
    ca: Path | None = None
    #: the deployment's stale window (``--stale-after`` of bootwatch server/monitor)
    stale_after: float = 9000.0  # the monitor's default (MonitorSettings)
    #: the deployment's sweep period; 0 = derived as the monitor derives it
    sweep: float = 0.0
    #: how long to keep watching after ``duration`` (None: interval + sweep + 10 s)
    grace: float | None = None
    #: swtpm processes shared by the VMs; None = one per VM up to DEDICATED_MAX
    vtpm_pool: int | None = None
    jitter: float = 0.1
    seed: int = 0
    timeout: float = 15.0
    keep: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.vms <= 100_000:
            raise ConfigError("--vms must be 1-100000")
        if not 1 <= self.interval <= 86400:
            raise ConfigError("--interval must be 1-86400 seconds")
        if not 1 <= self.duration <= 7 * 86400:
            raise ConfigError("--duration must be 1 s to 7 days")
        if self.stale_after <= 0:
            raise ConfigError("--stale-after must be a positive number of seconds")
        if self.vtpm_pool is not None and self.vtpm_pool < 1:
            raise ConfigError("--vtpm-pool must be at least 1")
        if not self.url.startswith(("https://", "http://")):
            raise ConfigError(f"--url {self.url!r}: not an http(s) URL")

    @property
    def sweep_period(self) -> float:
        return self.sweep if self.sweep > 0 else min(30.0, max(1.0, self.stale_after / 4))

    @property
    def grace_period(self) -> float:
        return self.grace if self.grace is not None else self.interval + self.sweep_period + 10

    @property
    def pool(self) -> int | None:
        if self.vtpm_pool is not None:
            return self.vtpm_pool if self.vtpm_pool < self.vms else None
        return None if self.vms <= DEDICATED_MAX else DEFAULT_POOL


@dataclass(frozen=True)
class CycleRecord:
    start: float
    end: float
    verdict: str
    delivered: bool | None
    #: why the service (or the agent) ended the cycle so, as the agent heard it
    reason: str = ""
    #: its health report reached the monitor under this VM's id (a report sent before
    #: the AIK was read names the machine's id instead, another VM to the monitor)
    reported: bool = False

    @property
    def reached(self) -> bool:
        """The attestation reached the service (so the monitor heard of the VM)."""
        return self.verdict in {v.value for v in _REACHED}

    @property
    def alive(self) -> bool:
        """The monitor heard of the VM: its attestation reached the service, or its
        health report reached the monitor (which counts a platform-error report, the
        one an unreachable service leaves, as alive: no ``agent_unresponsive`` may open
        while those arrive)."""
        return self.reached or self.reported


@dataclass(frozen=True)
class Cause:
    """A thing the simulator did that the monitor must (or may, or must not) alert on."""

    vm: str
    vm_id: str
    action: str
    reason: str
    #: when the bad state began (a reboot's end, the forged log in place) or, for
    #: agent_unresponsive, when the monitor should have found the VM silent
    at: float
    #: True: an alert must open; None: either is right (timing too close to call);
    #: False: no alert may open (a silence shorter than the stale window)
    expected: bool | None
    note: str = ""
    #: the earliest an alert for it can rightly open (default ``at``)
    earliest: float | None = None
    #: the latest an alert for it can rightly open (a silence's alert opens before the
    #: VM is back); None: any time after
    latest: float | None = None
    #: when the simulator undid the change (a tampered log put right); None: never
    until: float | None = None

    @property
    def window_start(self) -> float:
        return self.at if self.earliest is None else self.earliest


@dataclass(frozen=True)
class Match:
    cause: Cause
    alert_id: str | None
    latency: float | None
    already_open: bool = False


@dataclass(frozen=True)
class FalseAlert:
    """An alert on a fleet VM that detects no cause."""

    vm: str
    vm_id: str
    reason: str
    alert_id: str
    start: str
    status: str
    description: str

    def to_json(self) -> dict[str, str]:
        return {"vm": self.vm, "vm_id": self.vm_id, "reason": self.reason,
                "alert_id": self.alert_id, "start": self.start, "status": self.status,
                "description": self.description}


@dataclass(frozen=True)
class FleetReport:
    """What ``--json`` prints (``to_json``); see docs/lab.md for every key."""

    config: dict[str, Any]
    setup_seconds: float
    warmup_seconds: float
    cycles: dict[str, int]
    matches: tuple[Match, ...]
    false_alerts: tuple[FalseAlert, ...]
    ambiguous: int
    undetectable: tuple[Cause, ...]
    vm_states: dict[str, int]
    problems: tuple[str, ...]
    #: share-selected events the fleet was too small for (FleetSimulator.plan)
    skipped: tuple[str, ...] = ()

    @property
    def missed(self) -> tuple[Cause, ...]:
        return tuple(m.cause for m in self.matches if m.alert_id is None)

    def latencies(self, unresponsive: bool) -> list[float]:
        return sorted(m.latency for m in self.matches if m.latency is not None
                      and (m.cause.reason == "agent_unresponsive") == unresponsive)

    @property
    def ok(self) -> bool:
        return not self.missed and not self.false_alerts and not self.problems

    def to_json(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, Any]:
            return {"count": len(values), "p50": _pct(values, 50), "p99": _pct(values, 99),
                    "max": round(values[-1], 3) if values else None}

        kinds: dict[str, dict[str, Any]] = {}
        for m in self.matches:
            k = kinds.setdefault(m.cause.action, {"causes": 0, "detected": 0, "missed": 0,
                                                  "latencies": []})
            k["causes"] += 1
            k["detected" if m.alert_id else "missed"] += 1
            if m.latency is not None:
                k["latencies"].append(m.latency)
        by_action = {a: {"causes": k["causes"], "detected": k["detected"],
                         "missed": k["missed"], "latency_s": stats(sorted(k["latencies"]))}
                     for a, k in sorted(kinds.items())}
        return {
            "ok": self.ok,
            "config": self.config,
            "setup_s": round(self.setup_seconds, 3),
            "warmup_s": round(self.warmup_seconds, 3),
            "cycles": self.cycles,
            "causes": len(self.matches),
            "detected": sum(1 for m in self.matches if m.alert_id),
            "missed": len(self.missed),
            "false_alerts": len(self.false_alerts),
            "ambiguous": self.ambiguous,
            "undetectable": len(self.undetectable),
            "detection_latency_s": stats(self.latencies(False)),
            "unresponsive_latency_s": stats(self.latencies(True)),
            "by_action": by_action,
            "missed_list": [_cause_json(c) for c in self.missed],
            "false_alert_list": [a.to_json() for a in self.false_alerts],
            "undetectable_list": [_cause_json(c) for c in self.undetectable],
            "vm_states": self.vm_states,
            "problems": list(self.problems),
            "skipped": list(self.skipped),
        }


def _cause_json(c: Cause) -> dict[str, Any]:
    return {"vm": c.vm, "vm_id": c.vm_id, "action": c.action, "reason": c.reason,
            "at": _iso(c.at), "note": c.note}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    rank = max(1, -(-len(values) * p // 100))
    return round(values[int(rank) - 1], 3)


# --- the daemon, observed -------------------------------------------------------


class _ObservedDaemon(AgentDaemon):
    """The real daemon; each cycle's result is handed to the simulator, and with a
    vTPM pool the VM's swtpm runs only for the cycle, inside a pool slot."""

    def __init__(self, loaded: LoadedConfig, *, sim_vm: _SimVm,
                 pool: threading.Semaphore | None, boot_id: Callable[[], str]) -> None:
        super().__init__(loaded, boot_id=boot_id)
        self._sim_vm = sim_vm
        self._pool = pool

    def _enter_target(self, stack: ExitStack) -> _Target | PlatformError:
        if self._pool is None:
            return super()._enter_target(stack)
        return PlatformError("pooled vTPM: started for each cycle")

    def _cycle(self, target: _Target | PlatformError) -> CycleResult:
        if self._pool is None:
            start = time.time()
            result = super()._cycle(target)
        else:
            with self._pool, ExitStack() as stack:
                start = time.time()  # the cycle (and its log read) begins with the slot
                result = super()._cycle(AgentDaemon._enter_target(self, stack))
        verdict = result.outcome.verdict.value if result.outcome else "none"
        reason = result.outcome.reason if result.outcome else ""
        reported = (result.delivered is True and result.report is not None
                    and result.report.vm_id.upper() == self._sim_vm.vm_id)
        self._sim_vm.record(CycleRecord(start, time.time(), verdict, result.delivered,
                                        reason, reported))
        return result


# --- one simulated VM -----------------------------------------------------------


@dataclass
class _SimVm:
    index: int
    name: str
    vm_id: str
    image: Path
    folder: Path
    boots: int = 1
    cycles: list[CycleRecord] = field(default_factory=list)
    daemon: _ObservedDaemon | None = None
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sent_log(self) -> Path:
        """The log the agent reads (its ``log`` setting): the VM's own, unless tampered."""
        return self.folder / "sent-eventlog.bin"

    def record(self, c: CycleRecord) -> None:
        with self.lock:
            self.cycles.append(c)

    def snapshot(self) -> list[CycleRecord]:
        with self.lock:
            return list(self.cycles)


@dataclass(frozen=True)
class _Step:
    at: float
    action: Action
    vms: tuple[int, ...]
    ends: bool  # True: the end of a lasting action
    line: int


@dataclass
class _Outage:
    vm: int
    action: Action
    start: float
    end: float | None = None


# --- the simulator --------------------------------------------------------------


class FleetSimulator:
    """Set up, run and judge one fleet run (:func:`run_fleet` does all three)."""

    def __init__(self, cfg: FleetConfig, progress: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.say = progress or (lambda _msg: None)
        self.run_id = uuid.uuid4().hex[:6]
        self.group = f"fleet-{self.run_id}"
        self.lab = Lab(cfg.lab_dir)
        self.work = cfg.work_dir / self.group
        self.vms: list[_SimVm] = []
        self.pool = threading.Semaphore(cfg.pool) if cfg.pool else None
        self.causes: list[Cause] = []
        self.outages: list[_Outage] = []
        self.problems: list[str] = []
        #: share-selected events the fleet was too small for, in full or in part (plan)
        self.skipped: list[str] = []
        self._dead: socket.socket | None = None
        self.dead_url = ""
        self._logs: dict[str, Path] = {}
        self._tls: ssl.SSLContext | bool = (ssl.create_default_context(cafile=str(cfg.ca))
                                            if cfg.ca else True)

    # --- inputs -----------------------------------------------------------------

    def corpus_file(self, rel: str, field: str) -> Path:
        """The file the scenario's ``field`` names; a missing one is refused at the
        field's place in the scenario file (it may be a typo there, or --corpus)."""
        path = Path(rel) if Path(rel).is_absolute() else self.cfg.corpus / rel
        if not path.is_file():
            raise self.cfg.scenario.error(field, f"{path}: no such file")
        return path

    def _images(self) -> list[Path]:
        return [self.corpus_file(p, f"images[{i}]")
                for i, p in enumerate(self.cfg.scenario.images)]

    def plan(self) -> list[_Step]:
        """Scenario events as timed steps on distinct VMs (a seeded draw).

        Indexes and counts are absolute: a fleet without enough VMs free for them is a
        :class:`ScenarioError` at the event.  A share (``5%``) takes at least one VM while
        some are free and never a VM another event names by index; what a share could not
        get is listed in :attr:`skipped` (and the report), not refused."""
        sc, n = self.cfg.scenario, self.cfg.vms
        self.skipped = []
        rng = random.Random(self.cfg.seed)
        free = list(range(n))
        rng.shuffle(free)
        # counts and shares draw the VMs no event names by index first: an earlier draw
        # taking a VM a later event names would refuse a valid scenario for some seeds
        named = {i for ev in sc.events for i in ev.vms.indexes}
        free = [i for i in free if i not in named] + [i for i in free if i in named]
        used: set[int] = set()
        steps: list[_Step] = []
        for k, ev in enumerate(sc.events):
            at = ev.at.resolve(self.cfg.duration)
            if at > self.cfg.duration:
                raise ScenarioError(f"at {ev.at} is after the end of the run "
                                    f"(--duration {self.cfg.duration:g} s)", source=sc.source,
                                    line=ev.line, field=f"events[{k}].at")
            if ev.vms.indexes:
                bad = [i for i in ev.vms.indexes if i >= n or i in used]
                if bad:
                    raise ScenarioError(f"VM index {bad[0]} is not in the fleet of {n} or is "
                                        "used by an earlier event", source=sc.source,
                                        line=ev.line, field=f"events[{k}].vms")
                chosen = list(ev.vms.indexes)
            else:
                want = ev.vms.how_many(n)
                share = ev.vms.fraction is not None
                pick = [i for i in free if i not in used and not (share and i in named)][:want]
                if len(pick) < want and not share:
                    raise ScenarioError(f"needs {want} VMs but only {len(pick)} of the {n} are "
                                        "not used by an earlier event", source=sc.source,
                                        line=ev.line, field=f"events[{k}].vms")
                if len(pick) < want:
                    # a share is relative to the fleet: one too small for every event
                    # (the built-in scenario on fewer than 6 VMs) plays what it can and
                    # says what it left out, rather than refusing to run
                    self.skipped.append(
                        f"{sc.source}:{ev.line}: events[{k}] {ev.action.value} on "
                        f"{len(pick)} of the {want} VM(s) its share asks: the fleet of {n} "
                        "has no more that no other event uses")
                if not pick:
                    continue
                chosen = pick
            used.update(chosen)
            steps.append(_Step(at, ev.action, tuple(sorted(chosen)), False, ev.line))
            if ev.lasts is not None:
                end = min(at + ev.lasts.resolve(self.cfg.duration), self.cfg.duration)
                steps.append(_Step(end, ev.action, tuple(sorted(chosen)), True, ev.line))
        steps.sort(key=lambda s: (s.at, s.ends))
        return steps

    def _log_for(self, vm: _SimVm, action: Action) -> Path:
        sc = self.cfg.scenario
        images = self._images()
        if action is Action.IMAGE_UPDATE:
            return images[1] if vm.image == images[0] else images[0]
        if action is Action.SECURE_BOOT_OFF:
            return self.corpus_file(sc.secure_boot_off_log, "secure_boot_off_log")
        if action is Action.DBX_UPDATE:
            key = f"dbx:{vm.image}"
            if key not in self._logs:
                update = self.corpus_file(sc.dbx_update, "dbx_update").read_bytes()
                out = self.work / f"dbx-{len(self._logs)}-{vm.image.name}"
                out.write_bytes(apply_dbx_update(vm.image.read_bytes(), update))
                self._logs[key] = out
            return self._logs[key]
        # tampering: a real log of another image, sent by a VM that did not boot it
        return images[1] if vm.image == images[0] else images[0]

    # --- set-up -----------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.cfg.url.rstrip("/") + "/api/v1", verify=self._tls,
                            timeout=60, headers={"Authorization":
                                                 f"Bearer {self.cfg.admin_token}"})

    def _api(self, c: httpx.Client, method: str, path: str, **kw: Any) -> Any:
        """One monitor API call; a typed error naming the call when it fails."""
        try:
            r = c.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {self.cfg.url}/api/v1{path}: {exc}",
                                 step="protocol", target=self.cfg.url) from None
        if r.status_code in (401, 403):
            raise ConfigError(f"the monitor at {self.cfg.url} refused the admin token "
                              f"(HTTP {r.status_code} on {method} {path})")
        if r.status_code != 200:
            raise ConfigError(f"the monitor at {self.cfg.url}: {method} {path} answered HTTP "
                              f"{r.status_code}: {r.text[:200]}")
        return r.json()

    def setup(self) -> None:
        cfg = self.cfg
        with self._client() as c:  # before making any VM: is the deployment there, ours?
            self._api(c, "GET", "/summary")
        # where a VM whose network is down connects: bound, never listening, so refused
        self._dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead.bind(("127.0.0.1", 0))
        self.dead_url = f"https://127.0.0.1:{self._dead.getsockname()[1]}"
        images = self._images()
        self.corpus_file(cfg.scenario.secure_boot_off_log, "secure_boot_off_log")
        self.corpus_file(cfg.scenario.dbx_update, "dbx_update")
        (self.work / "agents").mkdir(parents=True, exist_ok=True)
        _ = self.lab.ca, self.lab.ek_ca  # made once, before threads use them
        self.say(f"creating {cfg.vms} lab VMs ({self.group}) in {self.lab.root}")
        for i in range(cfg.vms):
            name = f"{self.group}-{i:05d}"
            image = images[i % 2]
            vm = self.lab.create_vm(name, image)
            sim = _SimVm(i, name, vm.vm_id.upper(), image, self.work / "agents" / name)
            sim.folder.mkdir(parents=True)
            sim.sent_log.write_bytes(vm.log_path.read_bytes())
            self.vms.append(sim)
            if (i + 1) % 100 == 0:
                self.say(f"  {i + 1} VMs created")
        self.say("enabling monitoring for each VM")
        with self._client() as c:
            for sim in self.vms:
                self._api(c, "POST", f"/vms/{sim.vm_id}/enable", json={
                    "name": sim.name, "group": self.group, "security_type": "trusted-launch",
                    "secure_boot": "on", "vtpm": "on"})

    def _agent_config(self, sim: _SimVm, *, network: bool = True) -> AgentConfig:
        cfg = self.cfg
        url = cfg.url.rstrip("/") if network else self.dead_url
        return AgentConfig(
            url=url, ca=cfg.ca, lab_vm=sim.name, lab_dir=self.lab.root, log=sim.sent_log,
            monitor_url=url, monitor_ca=cfg.ca, state_dir=sim.folder / "state",
            interval=cfg.interval, jitter=cfg.jitter, timeout=cfg.timeout, proxy="",
            cycle_in_child=False, source=f"fleet simulator ({self.group})",
            # a report sent before the AIK is read (a platform error) names this id, not
            # the host's machine id that every simulated VM shares (a bogus VM otherwise)
            vm_id=sim.vm_id,
        )

    def start_agent(self, sim: _SimVm) -> None:
        boot = f"{sim.vm_id}-boot-{sim.boots}"
        daemon = _ObservedDaemon(LoadedConfig(self._agent_config(sim)), sim_vm=sim,
                                 pool=self.pool, boot_id=lambda: boot)
        thread = threading.Thread(target=self._run_agent, args=(sim, daemon),
                                  name=f"agent-{sim.name}", daemon=True)
        sim.daemon, sim.thread = daemon, thread
        thread.start()

    def _run_agent(self, sim: _SimVm, daemon: _ObservedDaemon) -> None:
        try:
            daemon.run()
        except Exception as exc:  # a daemon that crashed is a finding, not a traceback
            self.problems.append(f"{sim.name}: the agent daemon stopped: "
                                 f"{type(exc).__name__}: {exc}")

    def stop_agent(self, sim: _SimVm) -> None:
        if sim.daemon is not None:
            sim.daemon.request_stop()
        if sim.thread is not None:
            sim.thread.join(timeout=self.cfg.timeout * 3 + 30)
            if sim.thread.is_alive():
                self.problems.append(f"{sim.name}: the agent did not stop")
        sim.daemon, sim.thread = None, None

    # --- drift --------------------------------------------------------------------

    def apply(self, step: _Step) -> None:
        for i in step.vms:
            sim = self.vms[i]
            try:
                self._apply_one(sim, step)
            except BootwatchError as exc:
                self.problems.append(f"{sim.name}: {step.action.value} failed: {exc}")

    def _apply_one(self, sim: _SimVm, step: _Step) -> None:
        action = step.action
        if action.reboots:
            target = self._log_for(sim, action)
            self.stop_agent(sim)        # the VM reboots: its agent goes down with it
            vm = self.lab.reboot_vm(sim.name, target)
            sim.boots += 1
            sim.image = target
            sim.sent_log.write_bytes(vm.log_path.read_bytes())
            self.causes.append(Cause(sim.name, sim.vm_id, action.value,
                                     EXPECTED_REASON[action], time.time(), True))
            self.start_agent(sim)       # ... and starts with the new boot
        elif action is Action.TAMPER:
            if step.ends:
                data = self.lab.get_vm(sim.name).log_path.read_bytes()
                self.causes = [replace(c, until=time.time()) if c.vm_id == sim.vm_id
                               and c.action == action.value and c.until is None else c
                               for c in self.causes]
            else:
                data = self._log_for(sim, action).read_bytes()
            tmp = sim.sent_log.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(sim.sent_log)
            if not step.ends:
                self.causes.append(Cause(sim.name, sim.vm_id, action.value,
                                         EXPECTED_REASON[action], time.time(), True))
        elif action is Action.AGENT_DOWN:
            if step.ends:
                self._end_outage(sim.index)
                self.start_agent(sim)
            else:
                self.stop_agent(sim)
                self.outages.append(_Outage(sim.index, action, time.time()))
        elif action is Action.NETWORK_DOWN:
            daemon = sim.daemon
            if daemon is not None:
                # the daemon reads ``config`` at the start of each cycle: its next one
                # finds the network gone (or back), on its own schedule and backoff
                daemon.config = self._agent_config(sim, network=step.ends)
            if step.ends:
                self._end_outage(sim.index)
            else:
                self.outages.append(_Outage(sim.index, action, time.time()))

    def _end_outage(self, index: int) -> None:
        for o in self.outages:
            if o.vm == index and o.end is None:
                o.end = time.time()

    # --- the run ------------------------------------------------------------------

    def run(self) -> FleetReport:
        steps = self.plan()
        for note in self.skipped:
            self.say(f"skipped: {note}")
        try:
            return self._run(steps)
        finally:
            self._cleanup()

    def _run(self, steps: list[_Step]) -> FleetReport:
        cfg = self.cfg
        t_setup = time.monotonic()
        self.setup()
        setup_s = time.monotonic() - t_setup
        self.say(f"starting {cfg.vms} agents (interval {cfg.interval:g} s, "
                 + (f"a pool of {cfg.pool} swtpm processes" if cfg.pool
                    else "one swtpm per VM") + ")")
        t_warm = time.monotonic()
        spread = min(cfg.interval, 30.0)
        try:
            for sim in self.vms:
                self.start_agent(sim)
                time.sleep(spread / cfg.vms)
            self._warm_up()
            warm_s = time.monotonic() - t_warm
            t0 = time.time()
            self.say(f"every VM attested once; the scenario runs for {cfg.duration:g} s "
                     f"({len(steps)} steps)")
            for step in steps:
                _sleep_until(t0 + step.at)
                self.say(f"t+{time.time() - t0:.0f}s {step.action.value}"
                         f"{' ends' if step.ends else ''} on {len(step.vms)} VM(s)")
                self.apply(step)
            _sleep_until(t0 + cfg.duration)
            self.say(f"run over; watching up to {cfg.grace_period:g} s more for pending alerts")
            alerts = self._watch(t0 - 5, time.time() + cfg.grace_period)
            end = time.time()
        finally:
            for sim in self.vms:
                if sim.daemon is not None:
                    sim.daemon.request_stop()
            for sim in self.vms:
                self.stop_agent(sim)
        return self._judge(alerts, end, setup_s, warm_s, self._states())

    def _warm_up(self) -> None:
        deadline = time.monotonic() + 2 * self.cfg.interval + 60 + self.cfg.vms * 0.5
        while time.monotonic() < deadline:
            waiting = [s for s in self.vms if not any(c.reached for c in s.snapshot())]
            if not waiting:
                break
            time.sleep(0.5)
        bad = [s for s in self.vms if not any(c.verdict == Verdict.PERMIT.value
                                              for c in s.snapshot())]
        if bad:
            got = {s.name: (f"{s.snapshot()[-1].verdict} ({s.snapshot()[-1].reason[:200]})"
                            if s.cycles else "no cycle") for s in bad}
            raise LabError(f"{len(bad)} VM(s) were not permitted on their first attestation "
                           f"(the deployment must trust this lab's CA, --trust-anchors "
                           f"{self.lab.ca_cert_path}, and the images' Secure Boot keys, "
                           "--secureboot-templates from 'bootwatch log template'; "
                           "docs/lab.md): "
                           + "; ".join(f"{k}: {v}" for k, v in list(got.items())[:5]))

    def _fetch_alerts(self, since: float) -> list[dict[str, Any]]:
        ours = {s.vm_id for s in self.vms}
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        with self._client() as c:
            offset = 0
            while True:
                items = self._api(c, "GET", "/alerts", params={
                    "status": "all", "limit": 1000, "offset": offset})["items"]
                # offset paging while alerts open: a new alert shifts the pages, and the
                # alert at a page's end comes again at the next one's start (counted
                # twice, an unmatched duplicate was two false alerts)
                for a in items:
                    if str(a["vm_id"]).upper() in ours and a["id"] not in seen:
                        seen.add(a["id"])
                        out.append(a)
                offset += len(items)
                # newest first: older pages are before this run
                if len(items) < 1000 or _ts(items[-1]["startTimeUtc"]) < since - 60:
                    break
        return out

    def _watch(self, since: float, until: float) -> list[dict[str, Any]]:
        """Poll the monitor until every expected alert is there or ``until``."""
        while True:
            alerts = self._fetch_alerts(since)
            pending = self._expected_unmatched(alerts, time.time())
            if not pending or time.time() >= until:
                return alerts
            time.sleep(min(2.0, max(0.2, until - time.time())))

    def _expected_unmatched(self, alerts: list[dict[str, Any]], now: float) -> int:
        matches, _, _, _ = self._match(alerts, now)
        return sum(1 for m in matches if m.alert_id is None)

    def _states(self) -> dict[str, int]:
        states: dict[str, int] = {}
        with self._client() as c:
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"group": self.group, "limit": 1000}
                if cursor:
                    params["cursor"] = cursor
                body = self._api(c, "GET", "/vms", params=params)
                for v in body["items"]:
                    states[v["state"]] = states.get(v["state"], 0) + 1
                cursor = body.get("next_cursor")
                if not cursor:
                    return states

    # --- ground truth ---------------------------------------------------------------

    def _silence_causes(self, now: float) -> list[Cause]:
        """agent_unresponsive causes: every silence of a VM (between two cycles the
        monitor heard of, :attr:`CycleRecord.alive`, or since its last one) long enough
        for the stale window.
        A silence that holds a scripted outage is that outage's; any other is
        ``agent_late`` (the agent itself fell behind, e.g. on a starved machine): the
        monitor is right to alert on it, and the report counts it apart."""
        s, sweep = self.cfg.stale_after, self.cfg.sweep_period
        out: list[Cause] = []
        for sim in self.vms:
            reached = [c for c in sim.snapshot() if c.alive]
            outages = [o for o in self.outages if o.vm == sim.index]
            for k, last in enumerate(reached):
                nxt = reached[k + 1] if k + 1 < len(reached) else None
                back_start = nxt.start if nxt else now
                back_end = nxt.end if nxt else now
                due = last.end + s  # the monitor finds it silent at the latest here
                if back_start > due + sweep + 2 * _CLOCK_SLACK:
                    expected: bool | None = True
                elif back_end < last.start + s - _CLOCK_SLACK:
                    continue  # back within the window: no alert may open
                else:
                    expected = None
                scripted = next((o for o in outages if last.start <= o.start < back_start),
                                None)
                action = scripted.action.value if scripted else LATE
                out.append(Cause(sim.name, sim.vm_id, action, "agent_unresponsive", due,
                                 expected, f"silent {back_start - last.end:.1f} s, stale "
                                 f"after {s:g} s", earliest=last.start + s,
                                 latest=back_end + sweep + _CLOCK_SLACK))
        return out

    def _match(self, alerts: list[dict[str, Any]], now: float
               ) -> tuple[list[Match], list[FalseAlert], int, list[Cause]]:
        causes = self.causes + self._silence_causes(now)
        by_vm: dict[str, list[Cause]] = {}
        for c in causes:
            by_vm.setdefault(c.vm_id, []).append(c)
        matches: list[Match] = []
        undetectable: list[Cause] = []
        ambiguous = 0
        ordered = sorted(alerts, key=lambda a: (_ts(a["startTimeUtc"]), a["id"]))
        claimed: set[str] = set()
        for c in sorted(causes, key=lambda c: c.at):
            if c.expected is False:
                continue
            if c.expected and c.reason != "agent_unresponsive" and not self._seen_after(c):
                undetectable.append(c)  # no cycle reached the service after the change
                continue
            hit: Match | None = None
            for a in ordered:
                if a["id"] in claimed or a["reason"] != c.reason or \
                        str(a["vm_id"]).upper() != c.vm_id:
                    continue
                start = _ts(a["startTimeUtc"])
                end = _ts(a["endTimeUtc"]) if a.get("endTimeUtc") else None
                if c.latest is not None and start > c.latest:
                    continue  # opened after that silence ended: another cause's
                if start >= c.window_start - _CLOCK_SLACK:
                    # the API's times are whole seconds (truncated): the alert opened
                    # before start + 1, so this latency is an upper bound
                    hit = Match(c, a["id"], max(0.0, start + _CLOCK_SLACK - c.at))
                elif end is None or end >= c.window_start - _CLOCK_SLACK:
                    hit = Match(c, a["id"], None, already_open=True)
                else:
                    continue
                break
            if hit is not None and not hit.already_open:
                claimed.add(hit.alert_id or "")
            if c.expected is None:
                ambiguous += 1
                continue
            matches.append(hit or Match(c, None, None))
        false = [
            FalseAlert(str(a.get("vm_name", "")), str(a["vm_id"]), str(a["reason"]),
                       str(a["id"]), str(a["startTimeUtc"]), str(a["status"]),
                       str(a.get("description", ""))[:300])
            for a in ordered if a["id"] not in claimed
        ]
        return matches, false, ambiguous, undetectable

    def _seen_after(self, c: Cause) -> bool:
        """A cycle began (and read its log) while the change held, and reached the service."""
        sim = next(s for s in self.vms if s.vm_id == c.vm_id)
        until = c.until if c.until is not None else float("inf")
        return any(r.reached and c.at <= r.start < until for r in sim.snapshot())

    def _judge(self, alerts: list[dict[str, Any]], now: float, setup_s: float,
               warm_s: float, states: dict[str, int]) -> FleetReport:
        matches, false, ambiguous, undetectable = self._match(alerts, now)
        cycles: dict[str, int] = {"total": 0}
        for sim in self.vms:
            for c in sim.snapshot():
                cycles["total"] += 1
                cycles[c.verdict] = cycles.get(c.verdict, 0) + 1
        cfg = self.cfg
        config = {"vms": cfg.vms, "interval_s": cfg.interval, "duration_s": cfg.duration,
                  "stale_after_s": cfg.stale_after, "sweep_s": cfg.sweep_period,
                  "grace_s": cfg.grace_period, "vtpm_pool": cfg.pool,
                  "vtpm_mode": "pool" if cfg.pool else "dedicated",
                  "scenario": cfg.scenario.source, "group": self.group, "url": cfg.url,
                  "seed": cfg.seed}
        return FleetReport(config, setup_s, warm_s, cycles, tuple(matches), tuple(false),
                           ambiguous, tuple(undetectable), states, tuple(self.problems),
                           tuple(self.skipped))

    def _cleanup(self) -> None:
        if self._dead is not None:
            self._dead.close()
        if self.cfg.keep:
            return
        with suppress(httpx.HTTPError), self._client() as c:
            for sim in self.vms:
                c.post(f"/vms/{sim.vm_id}/disable")  # no stale alerts after the run
        for sim in self.vms:
            try:
                self.lab.destroy_vm(sim.name)
            except LabError as exc:
                log.warning("%s", exc)
        shutil.rmtree(self.work, ignore_errors=True)


def _sleep_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 1.0))


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run_fleet(cfg: FleetConfig, progress: Callable[[str], None] | None = None) -> FleetReport:
    """Run the fleet described by ``cfg`` and judge what the monitor saw."""
    return FleetSimulator(cfg, progress).run()

