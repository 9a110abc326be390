"""The rollout planner's rules, as tables: 20% batches, gating, halting, stability."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bootwatch.errors import StorageError
from bootwatch.monitor.releases.planner import (
    AgentView,
    BatchVerdict,
    MemberStatus,
    RolloutPolicy,
    decode_rollout_state,
    encode_rollout_state,
    plan_rollout,
    resume_rollout,
)
from bootwatch.protocol.release import ReleaseManifest, key_id

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RolloutPolicy(settle=timedelta(minutes=5), upgrade_timeout=timedelta(hours=1))
OLD, NEW = "1.0.0", "1.1.0"


def _release(version: str = NEW, **extra: str) -> ReleaseManifest:
    return ReleaseManifest(
        version=version, wheel=f"bootwatch-{version}-py3-none-any.whl", size=1000,
        sha256=hashlib.sha256(b"w").hexdigest(), published_at=T0,
        key_id=key_id(ed25519.Ed25519PrivateKey.generate().public_key()), **extra,
    )


def _fleet(n: int, version: str | None = OLD, *, at: datetime = T0,
           enabled: bool = True) -> dict[str, AgentView]:
    return {f"vm-{i:03d}": AgentView(f"vm-{i:03d}", enabled, version, True, at)
            for i in range(n)}


def _report(fleet: dict[str, AgentView], vms: tuple[str, ...] | list[str], version: str,
            healthy: bool | None, at: datetime) -> None:
    for vm in vms:
        fleet[vm] = AgentView(vm, True, version, healthy, at)


@pytest.mark.parametrize("enabled,disabled,size", [
    (10, 0, 2), (25, 0, 5), (100, 0, 20), (9, 0, 1), (3, 0, 1), (1, 0, 1),
    (10, 40, 2),  # disabled VMs neither count nor get batched
])
def test_a_batch_is_at_most_20_percent_of_the_enabled_vms(
    enabled: int, disabled: int, size: int
) -> None:
    fleet = _fleet(enabled)
    fleet.update({f"off-{i}": AgentView(f"off-{i}", False, OLD, True, T0)
                  for i in range(disabled)})
    plan = plan_rollout(_release(), list(fleet.values()), T0, policy=POLICY)
    assert plan.batch_size == size
    assert len(plan.state.batches) == 1 and len(plan.open_vm_ids) == size
    assert not any(vm.startswith("off-") for vm in plan.open_vm_ids)
    assert plan.waiting == enabled - size


def test_the_next_batch_waits_for_settle_and_for_every_member_to_be_healthy() -> None:
    fleet = _fleet(10)
    plan = plan_rollout(_release(), list(fleet.values()), T0, policy=POLICY)
    batch0 = plan.state.batches[0].vm_ids
    # replanning while the batch is in progress opens nothing and keeps the members
    t1 = T0 + timedelta(minutes=1)
    again = plan_rollout(_release(), list(fleet.values()), t1, state=plan.state, policy=POLICY)
    assert again.state == plan.state and again.batches[0].verdict is BatchVerdict.IN_PROGRESS
    # all members healthy on the new version, but the settle time has not elapsed
    _report(fleet, batch0, NEW, True, t1)
    early = plan_rollout(_release(), list(fleet.values()), T0 + timedelta(minutes=4),
                         state=again.state, policy=POLICY)
    assert len(early.state.batches) == 1
    assert early.batches[0].count(MemberStatus.HEALTHY) == 2
    # one member has no health verdict yet: still no next batch after settle
    _report(fleet, batch0[:1], NEW, None, t1)
    unknown = plan_rollout(_release(), list(fleet.values()), T0 + timedelta(minutes=6),
                           state=early.state, policy=POLICY)
    assert len(unknown.state.batches) == 1
    assert unknown.batches[0].count(MemberStatus.UNKNOWN) == 1
    # all healthy and settled: batch 1 opens, batch 0 passed
    _report(fleet, batch0, NEW, True, t1)
    t2 = T0 + timedelta(minutes=6)
    nxt = plan_rollout(_release(), list(fleet.values()), t2, state=unknown.state, policy=POLICY)
    assert [b.verdict for b in nxt.batches] == [BatchVerdict.PASSED, BatchVerdict.IN_PROGRESS]
    assert nxt.state.batches[1].opened_at == t2
    assert set(nxt.state.batches[1].vm_ids).isdisjoint(batch0)
    assert nxt.open_vm_ids == set(batch0) | set(nxt.state.batches[1].vm_ids)


@pytest.mark.parametrize("statuses,verdict", [
    # batch of 5 (25 VMs): statuses of the members after the settle time
    (["healthy"] * 5, BatchVerdict.PASSED),
    (["healthy"] * 4 + ["unhealthy"], BatchVerdict.PASSED),  # 20% is not MORE than 20%
    (["healthy"] * 3 + ["unhealthy"] * 2, BatchVerdict.UNHEALTHY),
    (["healthy"] * 3 + ["unhealthy", "failed"], BatchVerdict.UNHEALTHY),
    (["healthy"] * 4 + ["pending"], BatchVerdict.IN_PROGRESS),
    (["healthy"] * 3 + ["gone", "unhealthy"], BatchVerdict.UNHEALTHY),  # 1 of 4 = 25%
    (["healthy"] * 4 + ["gone"], BatchVerdict.PASSED),
])
def test_batch_verdicts(statuses: list[str], verdict: BatchVerdict) -> None:
    fleet = _fleet(25)
    plan = plan_rollout(_release(), list(fleet.values()), T0, policy=POLICY)
    members = plan.state.batches[0].vm_ids
    assert len(members) == 5
    now = T0 + timedelta(minutes=10)
    for vm, status in zip(members, statuses, strict=True):
        if status == "healthy":
            _report(fleet, [vm], NEW, True, now)
        elif status == "unhealthy":
            _report(fleet, [vm], NEW, False, now)
        elif status == "failed":  # did not upgrade within the timeout (or rolled back)
            _report(fleet, [vm], OLD, True, now)
        elif status == "gone":
            fleet[vm] = AgentView(vm, False, OLD, True, now)
    late = now if "failed" not in statuses else T0 + POLICY.upgrade_timeout
    result = plan_rollout(_release(), list(fleet.values()), late, state=plan.state,
                          policy=POLICY)
    assert result.batches[0].verdict is verdict
    assert result.halted is (verdict is BatchVerdict.UNHEALTHY)
    if result.halted:
        assert result.open_vm_ids == frozenset()
        assert result.state.halt_reason.startswith("batch 0: ")
        assert "(unhealthy)" in result.state.halt_reason
        assert len(result.state.batches) == 1


def test_a_halt_is_sticky_until_resumed_and_resuming_accepts_the_bad_batch() -> None:
    fleet = _fleet(10)
    plan = plan_rollout(_release(), list(fleet.values()), T0, policy=POLICY)
    batch0 = plan.state.batches[0].vm_ids
    t1 = T0 + timedelta(minutes=10)
    _report(fleet, batch0, NEW, False, t1)
    halted = plan_rollout(_release(), list(fleet.values()), t1, state=plan.state, policy=POLICY)
    assert halted.halted and halted.state.halted_at == t1
    # the VMs recover, but a halt stays until an operator resumes
    _report(fleet, batch0, NEW, True, t1 + timedelta(minutes=1))
    still = plan_rollout(_release(), list(fleet.values()), t1 + timedelta(minutes=20),
                         state=halted.state, policy=POLICY)
    assert still.halted and still.open_vm_ids == frozenset()
    _report(fleet, batch0, NEW, False, t1 + timedelta(minutes=21))
    resumed = plan_rollout(_release(), list(fleet.values()), t1 + timedelta(minutes=22),
                           state=resume_rollout(still.state), policy=POLICY)
    assert not resumed.halted
    assert [b.verdict for b in resumed.batches] == [BatchVerdict.ACCEPTED,
                                                    BatchVerdict.IN_PROGRESS]


def test_a_stale_unhealthy_report_from_before_the_batch_does_not_count() -> None:
    fleet = _fleet(5)
    plan = plan_rollout(_release(), list(fleet.values()), T0, policy=POLICY)
    vm = plan.state.batches[0].vm_ids[0]
    fleet[vm] = AgentView(vm, True, NEW, False, T0 - timedelta(minutes=1))
    again = plan_rollout(_release(), list(fleet.values()), T0 + timedelta(minutes=1),
                         state=plan.state, policy=POLICY)
    assert again.batches[0].members == ((vm, MemberStatus.UNKNOWN),)
    assert not again.halted


def test_vms_already_current_unreporting_or_outside_the_bounds_are_not_batched() -> None:
    fleet = _fleet(4)
    fleet["vm-new"] = AgentView("vm-new", True, NEW, True, T0)
    fleet["vm-newer"] = AgentView("vm-newer", True, "1.2.0", True, T0)
    fleet["vm-silent"] = AgentView("vm-silent", True, None, None, None)
    fleet["vm-ancient"] = AgentView("vm-ancient", True, "0.9.0", True, T0)
    fleet["vm-junk"] = AgentView("vm-junk", True, "not-a-version", True, T0)
    release = _release(min_agent_version="1.0.0")
    plan = plan_rollout(release, list(fleet.values()), T0, policy=RolloutPolicy(
        batch_fraction=1.0))
    assert plan.open_vm_ids == {"vm-000", "vm-001", "vm-002", "vm-003"}


def test_the_plan_is_stable_across_restarts_and_fleet_changes() -> None:
    fleet = _fleet(20)
    plan = plan_rollout(_release(), list(fleet.values()), T0, policy=POLICY)
    restored = decode_rollout_state(encode_rollout_state(plan.state), "rollout.json")
    assert restored == plan.state
    # new VMs join and the fleet is listed in another order: the open batch does not move
    fleet.update(_fleet(40))
    later = plan_rollout(_release(), list(reversed(fleet.values())),
                         T0 + timedelta(minutes=1), state=restored, policy=POLICY)
    assert later.state.batches == plan.state.batches
    # a different release starts on a different slice of the same fleet
    other = plan_rollout(_release("1.2.0"), list(_fleet(20).values()), T0, policy=POLICY)
    assert other.state.batches[0].vm_ids != plan.state.batches[0].vm_ids


def test_a_rollout_completes_when_every_enabled_vm_is_healthy_on_the_release() -> None:
    fleet = _fleet(5)
    state = None
    now = T0
    for _ in range(5):
        plan = plan_rollout(_release(), list(fleet.values()), now, state=state, policy=POLICY)
        state = plan.state
        _report(fleet, plan.state.batches[-1].vm_ids, NEW, True, now)
        now += timedelta(minutes=6)
    final = plan_rollout(_release(), list(fleet.values()), now, state=state, policy=POLICY)
    assert final.complete and final.waiting == 0 and len(final.state.batches) == 5
    assert all(b.verdict is BatchVerdict.PASSED for b in final.batches)


@pytest.mark.parametrize("data,needle", [
    (b"[]", "not a JSON object"),
    (b"{", "unreadable rollout state"),
    (b'{"version": "1.1.0", "started_at": "2026-12-01T12:00:00+00:00", "halted": false,'
     b' "batches": [{"index": 3, "vm_ids": [], "opened_at": "2026-12-01T12:00:00+00:00"}]}',
     "batches[0].index"),
    (b'{"version": "1.1.0", "started_at": "noon", "halted": false, "batches": []}',
     "started_at"),
])
def test_a_corrupt_rollout_state_names_the_file_and_field(data: bytes, needle: str) -> None:
    with pytest.raises(StorageError) as err:
        decode_rollout_state(data, "/data/releases/1.1.0/rollout.json")
    assert "/data/releases/1.1.0/rollout.json" in str(err.value) and needle in str(err.value)
