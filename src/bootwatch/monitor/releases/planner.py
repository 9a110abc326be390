"""The rollout planner: which VMs may take a release now (pure: values in, plan out).

Azure rolls an extension upgrade out in batches of at most 20% of the VMs,
moves on only while the upgraded VMs stay healthy, and halts a scale set
when more than 20% of a batch is unhealthy (monitoring-facts section 2).
bootwatch does the same for its agent:

* a batch is at most ``batch_fraction`` (20%) of the *enabled* VMs, at least
  one VM (named leniency: a fleet of fewer than five VMs still progresses,
  one VM at a time);
* batch members are chosen in a stable order (SHA-256 of version and VM id),
  so each release starts on a different slice of the fleet, and assigned
  once: the assignment is part of the persisted :class:`RolloutState`, so a
  monitor restart or a VM joining the fleet never reshuffles open batches;
* the next batch opens only when every earlier batch has *passed*: its
  settle time has elapsed since it opened and each member either reported
  healthy on the new version or was counted against the batch;
* a member that reports unhealthy on the new version, or is not on the new
  version ``upgrade_timeout`` after its batch opened (it never upgraded, or it
  rolled back), is *bad*; more than ``halt_fraction`` (20%) bad members halt
  the rollout.  A halt is sticky (persisted) until an operator resumes it;
  resuming accepts the batches opened so far, so they no longer gate.

The caller owns time, persistence and the fleet view; this module only
decides, so the table tests can pin every rule.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from packaging.version import InvalidVersion, Version

from bootwatch.errors import StorageError
from bootwatch.protocol.release import ReleaseManifest, check_upgrade

__all__ = [
    "AgentView",
    "Batch",
    "BatchStatus",
    "BatchVerdict",
    "MemberStatus",
    "RolloutPlan",
    "RolloutPolicy",
    "RolloutState",
    "decode_rollout_state",
    "encode_rollout_state",
    "halt_rollout",
    "plan_rollout",
    "resume_rollout",
]


@dataclass(frozen=True)
class AgentView:
    """What the monitor knows of one VM's agent (from its health reports)."""

    vm_id: str
    enabled: bool
    agent_version: str | None
    healthy: bool | None
    last_report_at: datetime | None


@dataclass(frozen=True)
class RolloutPolicy:
    """The rollout's knobs (defaults: Azure's 20% batches and 20% halt threshold)."""

    batch_fraction: float = 0.2
    halt_fraction: float = 0.2
    #: how long a batch must have been open before the next one may open
    settle: timedelta = timedelta(minutes=5)
    #: a member not healthy on the new version this long after its batch opened is bad.
    #: A healthy agent needs up to one check gap (check interval, 1 h + 10 %, and half a
    #: cycle: about 5,900 s with the agent's defaults), the install and restart, and the
    #: new version's first cycle and report; 3 h leaves an hour for a check that failed
    #: once.  It was 2 h, which healthy agents overran when checks waited a whole cycle
    upgrade_timeout: timedelta = timedelta(hours=3)


@dataclass(frozen=True)
class Batch:
    """One batch as assigned (persisted): its members and when it opened."""

    index: int
    vm_ids: tuple[str, ...]
    opened_at: datetime


@dataclass(frozen=True)
class RolloutState:
    """The persisted part of a rollout: what was decided, so the plan survives restarts."""

    version: str
    started_at: datetime
    batches: tuple[Batch, ...] = ()
    halted: bool = False
    halt_reason: str = ""
    halted_at: datetime | None = None
    #: batches an operator accepted when resuming a halted rollout (they no longer gate)
    accepted: frozenset[int] = field(default_factory=frozenset)


class MemberStatus(StrEnum):
    """A batch member's state as the planner sees it."""

    PENDING = "pending"  # not on the new version yet, still within upgrade_timeout
    UNKNOWN = "unknown"  # on the new version, no health verdict since the batch opened
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # reported unhealthy on the new version
    FAILED = "failed"  # not healthy on the new version within upgrade_timeout
    GONE = "gone"  # disabled or no longer in the fleet: not counted


class BatchVerdict(StrEnum):
    """Where a batch stands."""

    IN_PROGRESS = "in_progress"
    PASSED = "passed"
    UNHEALTHY = "unhealthy"  # more than halt_fraction bad: halts the rollout
    ACCEPTED = "accepted"  # an operator resumed past it


@dataclass(frozen=True)
class BatchStatus:
    """One batch with its members' statuses and its verdict."""

    index: int
    opened_at: datetime
    members: tuple[tuple[str, MemberStatus], ...]
    verdict: BatchVerdict

    def count(self, *statuses: MemberStatus) -> int:
        return sum(1 for _, s in self.members if s in statuses)


@dataclass(frozen=True)
class RolloutPlan:
    """The planner's answer: the state to persist and who may upgrade now."""

    state: RolloutState
    batches: tuple[BatchStatus, ...]
    #: VMs whose batch is open (empty while halted)
    open_vm_ids: frozenset[str]
    #: enabled VMs still below the release and not yet in a batch
    waiting: int
    complete: bool
    batch_size: int

    @property
    def halted(self) -> bool:
        return self.state.halted


def _version(text: str | None) -> Version | None:
    if text is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _member_status(
    agent: AgentView | None, target: Version, opened_at: datetime, now: datetime,
    policy: RolloutPolicy,
) -> MemberStatus:
    if agent is None or not agent.enabled:
        return MemberStatus.GONE
    timed_out = now >= opened_at + policy.upgrade_timeout
    version = _version(agent.agent_version)
    if version is None or version < target:
        return MemberStatus.FAILED if timed_out else MemberStatus.PENDING
    fresh = agent.last_report_at is not None and agent.last_report_at >= opened_at
    if agent.healthy is False and fresh:
        return MemberStatus.UNHEALTHY
    if agent.healthy is True and fresh:
        return MemberStatus.HEALTHY
    return MemberStatus.FAILED if timed_out else MemberStatus.UNKNOWN


def _batch_status(
    batch: Batch, fleet: dict[str, AgentView], target: Version, now: datetime,
    policy: RolloutPolicy, accepted: frozenset[int],
) -> BatchStatus:
    members = tuple(
        (vm, _member_status(fleet.get(vm), target, batch.opened_at, now, policy))
        for vm in batch.vm_ids
    )
    counted = [s for _, s in members if s is not MemberStatus.GONE]
    bad = sum(1 for s in counted if s in (MemberStatus.UNHEALTHY, MemberStatus.FAILED))
    undecided = sum(1 for s in counted if s in (MemberStatus.PENDING, MemberStatus.UNKNOWN))
    if batch.index in accepted:
        verdict = BatchVerdict.ACCEPTED
    elif counted and bad > policy.halt_fraction * len(counted):
        verdict = BatchVerdict.UNHEALTHY
    elif now >= batch.opened_at + policy.settle and undecided == 0:
        verdict = BatchVerdict.PASSED
    else:
        verdict = BatchVerdict.IN_PROGRESS
    return BatchStatus(batch.index, batch.opened_at, members, verdict)


def _order_key(version: str, vm_id: str) -> str:
    return hashlib.sha256(f"{version}\0{vm_id}".encode()).hexdigest()


def _halt_reason(status: BatchStatus, policy: RolloutPolicy) -> str:
    bad = [
        f"{vm} ({s.value})" for vm, s in status.members
        if s in (MemberStatus.UNHEALTHY, MemberStatus.FAILED)
    ]
    counted = len(status.members) - status.count(MemberStatus.GONE)
    return (
        f"batch {status.index}: {len(bad)} of {counted} VMs unhealthy "
        f"(more than {policy.halt_fraction:.0%}): {', '.join(bad)}"
    )


def plan_rollout(
    release: ReleaseManifest,
    agents: Sequence[AgentView],
    now: datetime,
    *,
    state: RolloutState | None = None,
    policy: RolloutPolicy = RolloutPolicy(),
) -> RolloutPlan:
    """Evaluate the rollout of ``release`` over ``agents`` at ``now``; open at most one batch."""
    if state is None:
        state = RolloutState(version=release.version, started_at=now)
    elif state.version != release.version:
        raise ValueError(f"rollout state is for {state.version}, not {release.version}")
    target = release.parsed_version
    fleet = {a.vm_id: a for a in agents}
    enabled = [a for a in agents if a.enabled]
    batch_size = max(1, math.floor(policy.batch_fraction * len(enabled) + 1e-9))
    statuses = [
        _batch_status(b, fleet, target, now, policy, state.accepted) for b in state.batches
    ]
    if not state.halted:
        failing = next((s for s in statuses if s.verdict is BatchVerdict.UNHEALTHY), None)
        if failing is not None:
            state = replace(
                state, halted=True, halt_reason=_halt_reason(failing, policy), halted_at=now
            )
    assigned = {vm for b in state.batches for vm in b.vm_ids}
    candidates = sorted(
        (
            a for a in enabled
            if a.vm_id not in assigned and a.agent_version is not None
            and _version(a.agent_version) is not None
            and check_upgrade(
                a.agent_version, release, allow_major=True, allow_prerelease=True
            ).allowed
        ),
        key=lambda a: _order_key(release.version, a.vm_id),
    )
    gate_open = all(s.verdict in (BatchVerdict.PASSED, BatchVerdict.ACCEPTED) for s in statuses)
    if not state.halted and gate_open and candidates:
        batch = Batch(
            index=len(state.batches),
            vm_ids=tuple(a.vm_id for a in candidates[:batch_size]),
            opened_at=now,
        )
        state = replace(state, batches=(*state.batches, batch))
        statuses.append(_batch_status(batch, fleet, target, now, policy, state.accepted))
        candidates = candidates[batch_size:]
    open_ids: frozenset[str] = (
        frozenset() if state.halted else frozenset(vm for b in state.batches for vm in b.vm_ids)
    )
    complete = (
        not state.halted and not candidates
        and all(s.verdict in (BatchVerdict.PASSED, BatchVerdict.ACCEPTED) for s in statuses)
    )
    return RolloutPlan(
        state=state,
        batches=tuple(statuses),
        open_vm_ids=open_ids,
        waiting=len(candidates),
        complete=complete,
        batch_size=batch_size,
    )


def halt_rollout(state: RolloutState, reason: str, now: datetime) -> RolloutState:
    """An operator's halt (sticky until :func:`resume_rollout`)."""
    return replace(state, halted=True, halt_reason=reason or "halted by an operator", halted_at=now)


def resume_rollout(state: RolloutState) -> RolloutState:
    """Resume a halted rollout, accepting every batch opened so far (they stop gating)."""
    return replace(
        state, halted=False, halt_reason="", halted_at=None,
        accepted=state.accepted | {b.index for b in state.batches},
    )


# --- persistence format (the store writes these bytes atomically) ---------------


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def encode_rollout_state(state: RolloutState) -> bytes:
    """The JSON form of a rollout state (what the release store persists)."""
    body: dict[str, Any] = {
        "version": state.version,
        "started_at": _time(state.started_at),
        "batches": [
            {"index": b.index, "vm_ids": list(b.vm_ids), "opened_at": _time(b.opened_at)}
            for b in state.batches
        ],
        "halted": state.halted,
        "halt_reason": state.halt_reason,
        "halted_at": _time(state.halted_at),
        "accepted": sorted(state.accepted),
    }
    return json.dumps(body, indent=1, sort_keys=True).encode()


def _parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise StorageError(f"{where}: expected an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise StorageError(f"{where}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise StorageError(f"{where}: time without a zone")
    return parsed


def _ints(values: Iterable[object], where: str) -> frozenset[int]:
    out = set()
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool):
            raise StorageError(f"{where}: expected integers")
        out.add(v)
    return frozenset(out)


def decode_rollout_state(data: bytes, source: str) -> RolloutState:
    """Read a persisted rollout state; :class:`StorageError` naming the file and field."""
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise StorageError(f"{source}: not a JSON object")
        version = obj["version"]
        if not isinstance(version, str):
            raise StorageError(f"{source}: version: expected a string")
        batches = []
        for i, b in enumerate(obj["batches"]):
            ids = b["vm_ids"]
            if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
                raise StorageError(f"{source}: batches[{i}].vm_ids: expected strings")
            if b["index"] != i:
                raise StorageError(f"{source}: batches[{i}].index: expected {i}")
            batches.append(
                Batch(i, tuple(ids), _parse_time(b["opened_at"], f"{source}: batches[{i}]"))
            )
        halted_at = obj.get("halted_at")
        return RolloutState(
            version=version,
            started_at=_parse_time(obj["started_at"], f"{source}: started_at"),
            batches=tuple(batches),
            halted=bool(obj["halted"]),
            halt_reason=str(obj.get("halt_reason", "")),
            halted_at=None if halted_at is None else _parse_time(halted_at, f"{source}: halted_at"),
            accepted=_ints(obj.get("accepted", []), f"{source}: accepted"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"{source}: unreadable rollout state: {exc!r}") from None
