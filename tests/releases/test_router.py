"""The monitor's release routes over real HTTP on loopback, with a fake fleet."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bootwatch.monitor.releases import RolloutPolicy
from bootwatch.protocol.release import (
    ReleaseManifest,
    decode_signed_release,
    key_id,
    sign_release,
    verify_release,
)

OLD, NEW = "0.1.0", "0.2.0"
QUICK = RolloutPolicy(settle=timedelta(0))


def _publish(mon: Any, body: bytes, wheel: bytes, *, auth: bool = True) -> httpx.Response:
    payload = {"signed_release": json.loads(body), "wheel": base64.b64encode(wheel).decode()}
    return httpx.post(f"{mon.url}/api/v1/agent/releases", json=payload,
                      headers=mon.admin_headers if auth else {})


def _offer(mon: Any, vm: str, current: str = OLD, **extra: str) -> httpx.Response:
    return httpx.get(f"{mon.url}/api/v1/agent/releases/offer",
                     params={"vm_id": vm, "current": current, **extra})


def _fleet(mon: Any, n: int, version: str = OLD) -> list[str]:
    vms = [f"vm-{i:02d}" for i in range(n)]
    for vm in vms:
        mon.fleet.report(vm, version)
    return vms


def test_publish_needs_the_admin_token_and_stores_nothing_without(
    monitor: Any, wheels: dict[str, Path], release_key: Any, sign: Any
) -> None:
    body = sign(wheels[NEW], NEW, release_key)
    resp = _publish(monitor, body, wheels[NEW].read_bytes(), auth=False)
    assert resp.status_code == 401
    assert monitor.store.releases() == []
    listing = httpx.get(f"{monitor.url}/api/v1/agent/releases")
    assert listing.status_code == 401


def test_batches_of_20_percent_are_offered_and_the_wheel_matches(
    monitor: Any, wheels: dict[str, Path], release_key: Any, sign: Any
) -> None:
    vms = _fleet(monitor, 10)
    monitor.fleet.report("vm-disabled", OLD, enabled=False)
    body = sign(wheels[NEW], NEW, release_key)
    wheel = wheels[NEW].read_bytes()
    first = _publish(monitor, body, wheel)
    assert first.status_code == 201, first.text
    assert first.json() == {"version": NEW, "created": True,
                            "sha256": hashlib.sha256(wheel).hexdigest()}
    again = _publish(monitor, body, wheel)
    assert again.status_code == 200 and again.json()["created"] is False

    answers = {vm: _offer(monitor, vm) for vm in [*vms, "vm-disabled", "vm-unknown"]}
    offered = sorted(vm for vm, r in answers.items() if r.status_code == 200)
    assert len(offered) == 2  # 20% of the 10 enabled VMs
    assert all(r.status_code == 204 for vm, r in answers.items() if vm not in offered)
    manifest = verify_release(decode_signed_release(answers[offered[0]].content),
                              (release_key.private.public_key(),))
    assert manifest.version == NEW and manifest.sha256 == hashlib.sha256(wheel).hexdigest()

    got = httpx.get(f"{monitor.url}/api/v1/agent/releases/{NEW}/wheel")
    assert got.status_code == 200 and got.content == wheel
    missing = httpx.get(f"{monitor.url}/api/v1/agent/releases/9.9.9/wheel")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"

    listing = httpx.get(f"{monitor.url}/api/v1/agent/releases", headers=monitor.admin_headers)
    rollout = listing.json()["releases"][0]["rollout"]
    assert rollout["status"] == "rolling_out" and rollout["waiting"] == 8
    assert sorted(m["vm_id"] for m in rollout["batches"][0]["members"]) == offered
    assert rollout["batches"][0]["verdict"] == "in_progress"
    versions = {a["vm_id"]: a["agent_version"] for a in listing.json()["agents"]}
    assert versions["vm-00"] == OLD and len(versions) == 11


def test_a_vm_gets_no_offer_for_its_own_or_an_older_version(
    monitor_factory: Any, wheels: dict[str, Path], release_key: Any, sign: Any
) -> None:
    mon = monitor_factory()
    mon.fleet.report("vm-a", OLD)
    assert _publish(mon, sign(wheels[NEW], NEW, release_key), wheels[NEW].read_bytes()
                    ).status_code == 201
    assert _offer(mon, "vm-a", current=NEW).status_code == 204
    assert _offer(mon, "vm-a", current="0.3.0").status_code == 204  # would be a downgrade
    assert _offer(mon, "vm-a", current=OLD).status_code == 200
    bad = _offer(mon, "vm-a", current="not a version")
    assert bad.status_code == 400 and "current" in bad.json()["detail"]
    bad_vm = _offer(mon, "vm a/..", current=OLD)
    assert bad_vm.status_code == 400 and "vm_id" in bad_vm.json()["detail"]


def test_publish_refuses_tampering_unknown_keys_and_conflicts_and_stores_nothing(
    monitor: Any, wheels: dict[str, Path], release_key: Any, sign: Any
) -> None:
    wheel = wheels[NEW].read_bytes()
    body = sign(wheels[NEW], NEW, release_key)
    flipped = bytearray(wheel)
    flipped[len(flipped) // 2] ^= 0x01
    resp = _publish(monitor, body, bytes(flipped))
    assert resp.status_code == 422 and resp.json()["code"] == "release_refused:hash_mismatch"
    resp = _publish(monitor, body, wheel[:-1])
    assert resp.status_code == 422 and resp.json()["code"] == "release_refused:size_mismatch"

    stranger = ed25519.Ed25519PrivateKey.generate()
    data = wheels[NEW].read_bytes()
    foreign = sign_release(ReleaseManifest(
        version=NEW, wheel=wheels[NEW].name, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), published_at=datetime.now(UTC),
        key_id=key_id(stranger.public_key())), stranger)
    resp = _publish(monitor, foreign, wheel)
    assert resp.status_code == 422 and resp.json()["code"] == "release_refused:unknown_key"

    forged = json.loads(body)
    forged["manifest"]["sha256"] = hashlib.sha256(bytes(flipped)).hexdigest()
    resp = _publish(monitor, json.dumps(forged).encode(), bytes(flipped))
    assert resp.status_code == 422 and resp.json()["code"] == "release_refused:bad_signature"

    malformed = json.loads(body)
    malformed["manifest"]["size"] = "big"
    resp = _publish(monitor, json.dumps(malformed).encode(), wheel)
    assert resp.status_code == 400 and "manifest.size" in resp.json()["detail"]
    assert monitor.store.releases() == []
    assert not any(p.is_file() for p in monitor.store.root.rglob("*"))

    assert _publish(monitor, body, wheel).status_code == 201
    later = json.loads(body)
    later_manifest = decode_signed_release(body).claimed
    other = sign_release(
        ReleaseManifest(**{**later_manifest.__dict__,
                           "published_at": later_manifest.published_at + timedelta(hours=1)}),
        release_key.private,
    )
    assert later["manifest"]["version"] == NEW
    resp = _publish(monitor, other, wheel)
    assert resp.status_code == 409 and "already published" in resp.json()["detail"]


def test_next_batch_opens_only_after_the_previous_is_healthy(
    monitor_factory: Any, wheels: dict[str, Path], release_key: Any, sign: Any
) -> None:
    mon = monitor_factory(policy=QUICK)
    vms = _fleet(mon, 10)
    assert _publish(mon, sign(wheels[NEW], NEW, release_key), wheels[NEW].read_bytes()
                    ).status_code == 201
    batch0 = [vm for vm in vms if _offer(mon, vm).status_code == 200]
    assert len(batch0) == 2
    # one member upgraded and healthy, one still on the old version: no new batch
    mon.fleet.report(batch0[0], NEW, healthy=True)
    assert [vm for vm in vms if _offer(mon, vm).status_code == 200] == batch0
    mon.fleet.report(batch0[1], NEW, healthy=True)
    open_now = [vm for vm in vms if _offer(mon, vm).status_code == 200]
    assert len(open_now) == 4 and set(batch0) < set(open_now)


def test_an_unhealthy_batch_halts_until_resumed_and_the_state_survives_a_restart(
    monitor_factory: Any, wheels: dict[str, Path], release_key: Any, sign: Any, tmp_path: Path
) -> None:
    data = tmp_path / "persisted"
    mon = monitor_factory(policy=QUICK, data=data)
    vms = _fleet(mon, 10)
    assert _publish(mon, sign(wheels[NEW], NEW, release_key), wheels[NEW].read_bytes()
                    ).status_code == 201
    batch0 = [vm for vm in vms if _offer(mon, vm).status_code == 200]
    mon.fleet.report(batch0[0], NEW, healthy=True)
    mon.fleet.report(batch0[1], NEW, healthy=False)  # 1 of 2 = 50% > 20%
    assert all(_offer(mon, vm).status_code == 204 for vm in vms)
    listing = httpx.get(f"{mon.url}/api/v1/agent/releases", headers=mon.admin_headers).json()
    rollout = listing["releases"][0]["rollout"]
    assert rollout["status"] == "halted"
    assert f"{batch0[1]} (unhealthy)" in rollout["halt_reason"]

    # a restarted monitor over the same data keeps the halt and the batch assignment
    again = monitor_factory(policy=QUICK, data=data)
    for vm in vms:
        again.fleet.views[vm] = mon.fleet.views[vm]
    assert all(_offer(again, vm).status_code == 204 for vm in vms)
    resumed = httpx.post(f"{again.url}/api/v1/agent/releases/{NEW}/resume",
                         headers=again.admin_headers)
    assert resumed.status_code == 200 and resumed.json()["status"] == "rolling_out"
    assert resumed.json()["batches"][0]["verdict"] == "accepted"
    open_now = [vm for vm in vms if _offer(again, vm).status_code == 200]
    assert set(batch0) < set(open_now) and len(open_now) == 4

    halted = httpx.post(f"{again.url}/api/v1/agent/releases/{NEW}/halt",
                        headers=again.admin_headers, json={"reason": "change freeze"})
    assert halted.status_code == 200 and halted.json()["halt_reason"] == "change freeze"
    assert all(_offer(again, vm).status_code == 204 for vm in vms)
    assert httpx.post(f"{again.url}/api/v1/agent/releases/{NEW}/halt").status_code == 401
    assert httpx.post(f"{again.url}/api/v1/agent/releases/7.0.0/halt",
                      headers=again.admin_headers).status_code == 404


def test_a_major_release_is_offered_only_to_agents_that_take_majors(
    monitor: Any, release_key: Any, sign: Any, tmp_path: Path
) -> None:
    # the monitor never opens a wheel, so the major's "wheel" here is opaque bytes
    wheel = tmp_path / "bootwatch-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"opaque release bytes for the monitor's major-version rule")
    monitor.fleet.report("vm-a", OLD)
    assert _publish(monitor, sign(wheel, "1.0.0", release_key), wheel.read_bytes()
                    ).status_code == 201
    assert _offer(monitor, "vm-a").status_code == 204
    assert _offer(monitor, "vm-a", major="true").status_code == 200


@pytest.mark.parametrize("field,value,expect", [
    ("version", "1.0", "manifest.version"),
    ("wheel", "../bootwatch-0.2.0-py3-none-any.whl", "manifest.wheel"),
    ("sha256", "AB" * 32, "manifest.sha256"),
])
def test_publish_names_the_bad_manifest_field(
    monitor: Any, wheels: dict[str, Path], release_key: Any, sign: Any,
    field: str, value: str, expect: str,
) -> None:
    body = json.loads(sign(wheels[NEW], NEW, release_key))
    body["manifest"][field] = value
    resp = _publish(monitor, json.dumps(body).encode(), wheels[NEW].read_bytes())
    assert resp.status_code == 400 and expect in resp.json()["detail"]


def test_deep_or_large_admin_bodies_are_refused_with_a_reason_not_a_500(
    monitor: Any, wheels: dict[str, Path], release_key: Any, sign: Any
) -> None:
    """A deeply nested JSON body reached json.loads (RecursionError: a 500) in publish and
    halt; a halt body was read whole, however large."""
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = httpx.post(f"{monitor.url}/api/v1/agent/releases", content=deep,
                      headers=monitor.admin_headers, timeout=30)
    assert resp.status_code == 400 and "not JSON" in resp.text, resp.text
    body = sign(wheels[NEW], NEW, release_key)
    assert _publish(monitor, body, wheels[NEW].read_bytes()).status_code == 201
    halt = f"{monitor.url}/api/v1/agent/releases/{NEW}/halt"
    resp = httpx.post(halt, content=b'{"reason": ' + b"[" * 1000 + b"]" * 1000 + b"}",
                      headers=monitor.admin_headers, timeout=30)
    assert resp.status_code == 400, resp.text
    resp = httpx.post(halt, content=b" " * (10 * 1024 * 1024), headers=monitor.admin_headers,
                      timeout=30)
    assert resp.status_code == 413, resp.text
    assert monitor.store.rollout_state(NEW) is None or not monitor.store.rollout_state(
        NEW).halted


def test_offers_share_one_plan_for_a_while_and_a_halt_ends_it_at_once(
    monitor_factory: Any, wheels: dict[str, Path], release_key: Any, sign: Any
) -> None:
    """Each agent's offer request planned the rollout over the whole fleet: at 100,000
    VMs 0.9 s an offer, one at a time, against ~28 offers/s needed (found in an audit).
    Offers now answer from one plan for OFFER_PLAN_TTL; a halt clears it."""
    from bootwatch.monitor.releases.router import OFFER_PLAN_TTL

    mon = monitor_factory(policy=QUICK, offer_plan_ttl=OFFER_PLAN_TTL)
    vms = _fleet(mon, 10)
    reads = [0]
    agents = mon.fleet.agents

    def counted() -> Any:
        reads[0] += 1
        return agents()

    mon.fleet.agents = counted
    assert _publish(mon, sign(wheels[NEW], NEW, release_key), wheels[NEW].read_bytes()
                    ).status_code == 201
    reads[0] = 0
    offered = [vm for vm in vms if _offer(mon, vm).status_code == 200]
    assert len(offered) == 2 and reads[0] == 1  # ten offers, one plan
    halted = httpx.post(f"{mon.url}/api/v1/agent/releases/{NEW}/halt",
                        headers=mon.admin_headers, json={"reason": "stop"})
    assert halted.status_code == 200
    assert all(_offer(mon, vm).status_code == 204 for vm in vms)  # at once
