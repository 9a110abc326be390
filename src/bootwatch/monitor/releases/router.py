"""HTTP routes of agent releases, mounted under the monitor's ``/api/v1``.

* ``GET  /api/v1/agent/releases/offer?vm_id=ID&current=VERSION[&major=1]``: the
  signed manifest (200) when the newest release is being rolled out, this VM's
  batch is open and the release is newer than ``current`` (a major only when
  the agent says it takes majors); 204 otherwise.  The agent verifies the
  signature itself: the monitor is a distribution channel, not a signer.
* ``GET  /api/v1/agent/releases/{version}/wheel``: the wheel bytes.
* ``POST /api/v1/agent/releases`` (admin): publish ``{"signed_release": {...},
  "wheel": BASE64}``; verified before anything is stored.
* ``GET  /api/v1/agent/releases`` (admin): releases with the rollout status of
  every batch and the agent version of every VM.
* ``POST /api/v1/agent/releases/{version}/halt`` and ``.../resume`` (admin).

The rollout is re-planned (pure :func:`plan_rollout`) on each offer and
listing from the fleet view and the persisted state; a changed state (a batch
opened, a halt) is persisted before the answer is sent, so what an agent was
told survives a restart.  Errors are HTTP problem bodies (RFC 9457).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from bootwatch.errors import BootwatchError, ProtocolError, StorageError
from bootwatch.monitor.releases.planner import (
    AgentView,
    MemberStatus,
    RolloutPlan,
    RolloutPolicy,
    halt_rollout,
    plan_rollout,
    resume_rollout,
)
from bootwatch.monitor.releases.store import (
    MAX_WHEEL_BYTES,
    ReleaseConflictError,
    ReleaseStore,
    StoredRelease,
)
from bootwatch.protocol.jsonread import read_json
from bootwatch.protocol.release import (
    ReleaseRefusedError,
    check_upgrade,
    parse_version,
)

__all__ = ["OFFER_PLAN_TTL", "FleetView", "plan_release", "release_listing", "releases_router"]

PREFIX = "/api/v1/agent/releases"
_VM_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}\Z")
#: a publish body is the wheel in base64 plus a small manifest
_MAX_PUBLISH_BYTES = MAX_WHEEL_BYTES * 4 // 3 + 64 * 1024
_MAX_REASON = 500


class FleetView(Protocol):
    """The monitor's view of its agents (the lead wires the real one)."""

    def agents(self) -> Sequence[AgentView]: ...


def _problem(status: int, title: str, detail: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code},
        status_code=status,
        media_type="application/problem+json",
    )


def _error_response(exc: BootwatchError) -> JSONResponse:
    if isinstance(exc, ReleaseConflictError):
        return _problem(409, "Release conflict", exc.message, exc.code)
    if isinstance(exc, ReleaseRefusedError):
        return _problem(422, "Release refused", exc.message, f"{exc.code}:{exc.reason.value}")
    if isinstance(exc, ProtocolError):
        return _problem(400, "Malformed request", exc.message, exc.code)
    if isinstance(exc, StorageError):
        return _problem(503, "Release store unavailable", exc.message, exc.code)
    return _problem(500, "Release error", exc.message, exc.code)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def releases_router(
    store: ReleaseStore,
    fleet: FleetView,
    admin_auth: Callable[..., Any],
    *,
    agent_auth: Callable[..., Any] | None = None,
    policy: RolloutPolicy = RolloutPolicy(),  # noqa: B008 - frozen, immutable default
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    offer_plan_ttl: float | None = None,
) -> APIRouter:
    """The release routes over ``store`` and ``fleet``; ``admin_auth`` guards the admin routes.

    ``agent_auth`` (optional) guards the agent routes (offer, wheel) when the
    monitor authenticates its agents; ``clock`` is injectable for tests;
    ``offer_plan_ttl``: how long offers answer from one plan (None: OFFER_PLAN_TTL).
    """
    router = APIRouter(prefix=PREFIX, tags=["agent releases"])
    admin = [Depends(admin_auth)]
    agent = [Depends(agent_auth)] if agent_auth is not None else []

    def plan_for(release: StoredRelease) -> RolloutPlan:
        return plan_release(store, release, fleet.agents(), clock(), policy)

    offers = _OfferPlans(plan_for, OFFER_PLAN_TTL if offer_plan_ttl is None else offer_plan_ttl)

    @router.get("/offer", dependencies=agent, response_model=None)
    def offer(
        vm_id: str = Query(..., max_length=128),
        current: str = Query(..., max_length=64),
        major: bool = Query(False),
    ) -> Response:
        try:
            if not _VM_ID.match(vm_id):
                raise ProtocolError("must be 1-128 characters of A-Z a-z 0-9 . _ : @ -",
                                    field="vm_id")
            parse_version(current, "current")
            release = store.latest()
            if release is None:
                return Response(status_code=204)
            if vm_id not in offers.open_vm_ids(release):
                return Response(status_code=204)
            verdict = check_upgrade(
                current, release.manifest, allow_major=major, allow_prerelease=True
            )
            if not verdict.allowed:
                return Response(status_code=204)
            return Response(release.signed_body, media_type="application/json")
        except BootwatchError as exc:
            return _error_response(exc)

    @router.get("/{version}/wheel", dependencies=agent, response_model=None)
    def wheel(version: str) -> Response:
        try:
            release = store.get(version)
        except BootwatchError as exc:
            return _error_response(exc)
        if release is None:
            return _problem(404, "No such release", f"no release {version!r} is published",
                            "release_not_found")
        return FileResponse(
            release.wheel_path, media_type="application/octet-stream",
            filename=release.manifest.wheel,
        )

    @router.post("", dependencies=admin, response_model=None)
    async def publish(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > _MAX_PUBLISH_BYTES:
            return _problem(413, "Too large", f"a publish body is at most {_MAX_PUBLISH_BYTES} "
                            "bytes", "too_large")
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > _MAX_PUBLISH_BYTES:
                return _problem(413, "Too large", f"a publish body is at most "
                                f"{_MAX_PUBLISH_BYTES} bytes", "too_large")
            chunks.append(chunk)
        try:
            signed_body, wheel_bytes = _decode_publish(b"".join(chunks))
            release, created = await run_in_threadpool(store.publish, signed_body, wheel_bytes)
            offers.clear()
        except BootwatchError as exc:
            return _error_response(exc)
        return JSONResponse(
            {"version": release.manifest.version, "created": created,
             "sha256": release.manifest.sha256},
            status_code=201 if created else 200,
        )

    @router.get("", dependencies=admin, response_model=None)
    def list_releases() -> Response:
        try:
            agents = list(fleet.agents())
            items = release_listing(store, agents, clock(), policy)
        except BootwatchError as exc:
            return _error_response(exc)
        return JSONResponse({
            "releases": items,
            "agents": [
                {"vm_id": a.vm_id, "enabled": a.enabled, "agent_version": a.agent_version,
                 "healthy": a.healthy, "last_report_at": _time(a.last_report_at)}
                for a in sorted(agents, key=lambda a: a.vm_id)
            ],
        })

    def _change(version: str, halt: bool, reason: str) -> Response:
        try:
            with store.lock:
                release = store.get(version)
                if release is None:
                    return _problem(404, "No such release", f"no release {version!r} is "
                                    "published", "release_not_found")
                state = plan_for(release).state
                new = halt_rollout(state, reason, clock()) if halt else resume_rollout(state)
                store.save_rollout_state(new)
                plan = plan_for(release)
        except BootwatchError as exc:
            return _error_response(exc)
        finally:
            offers.clear()  # a halt stops offers at once, not when the cached plan expires
        return JSONResponse(_plan_json(plan, list(fleet.agents())))

    @router.post("/{version}/halt", dependencies=admin, response_model=None)
    async def halt(version: str, request: Request) -> Response:
        # read at most what a reason can take (a larger body is refused, not held)
        limit = _MAX_REASON * 8
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                return _problem(413, "Too large", f"a halt body is at most {limit} bytes",
                                "too_large")
        reason = "halted by an operator"
        if raw:
            try:
                obj = read_json(raw, field="body")  # depth-limited: never a RecursionError
                text = obj.get("reason") if isinstance(obj, dict) else None
            except ProtocolError:
                return _problem(400, "Malformed request", "body: not JSON", "protocol_invalid")
            if text is not None:
                if not isinstance(text, str) or len(text) > _MAX_REASON:
                    return _problem(400, "Malformed request",
                                    f"reason: a string of at most {_MAX_REASON} characters",
                                    "protocol_invalid")
                reason = text
        return await run_in_threadpool(_change, version, True, reason)

    @router.post("/{version}/resume", dependencies=admin, response_model=None)
    def resume(version: str) -> Response:
        return _change(version, False, "")

    return router


#: how long an offer may answer from the plan computed for an earlier one (seconds)
OFFER_PLAN_TTL = 15.0


class _OfferPlans:
    """The open batches' VMs of the newest plan, recomputed at most every ``ttl`` seconds
    (OFFER_PLAN_TTL by default) and by one request at a time.

    Why: planning reads every VM's agent view, and each agent's hourly offer request
    planned again: at 100,000 VMs 0.9 s per offer, serialized by the store's lock, against
    about 28 offers a second needed, and the queued offers held the API's thread pool
    (found in an audit).  Batches then open up to the TTL late, far inside their 5 min
    settle time; publishing, halting and resuming clear it at once."""

    def __init__(self, plan: Callable[[StoredRelease], RolloutPlan], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._plan = plan
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[str, float, frozenset[str]] | None = None

    def clear(self) -> None:
        with self._lock:
            self._cached = None

    def open_vm_ids(self, release: StoredRelease) -> frozenset[str]:
        with self._lock:
            hit = self._cached
            if (hit is not None and hit[0] == release.manifest.version
                    and self._clock() - hit[1] < self._ttl):
                return hit[2]
            ids = frozenset(self._plan(release).open_vm_ids)
            self._cached = (release.manifest.version, self._clock(), ids)
            return ids


def plan_release(
    store: ReleaseStore, release: StoredRelease, agents: Sequence[AgentView], now: datetime,
    policy: RolloutPolicy,
) -> RolloutPlan:
    """Re-plan ``release``'s rollout now and persist a changed state (a batch opened, a
    halt) before anyone is told about it, so what an agent or a page saw survives a
    restart; under the store's lock, so one caller at a time opens a batch."""
    with store.lock:
        state = store.rollout_state(release.manifest.version)
        plan = plan_rollout(release.manifest, agents, now, state=state, policy=policy)
        if plan.state != state:
            store.save_rollout_state(plan.state)
        return plan


def release_listing(
    store: ReleaseStore, agents: Sequence[AgentView], now: datetime, policy: RolloutPolicy,
) -> list[dict[str, Any]]:
    """Every release, newest first, each with its ``rollout`` object: the newest one's plan
    (:func:`plan_release`), older ones ``superseded``.  ``GET /agent/releases`` and the
    dashboard's Agents page both answer from this, so they cannot disagree."""
    items = []
    for i, release in enumerate(store.releases()):
        item = _release_json(release)
        if i == 0:
            item["rollout"] = _plan_json(plan_release(store, release, agents, now, policy),
                                         list(agents))
        else:
            state = store.rollout_state(release.manifest.version)
            item["rollout"] = {
                "status": "superseded",
                "batches_opened": len(state.batches) if state else 0,
            }
        items.append(item)
    return items


def _decode_publish(body: bytes) -> tuple[bytes, bytes]:
    try:
        obj = read_json(body, field="publish")  # depth-limited: never a RecursionError
    except ProtocolError as exc:
        raise ProtocolError(f"publish: not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("publish: the body must be a JSON object")
    signed = obj.get("signed_release")
    if not isinstance(signed, dict):
        raise ProtocolError("must be the signed release object", field="signed_release")
    wheel_text = obj.get("wheel")
    if not isinstance(wheel_text, str):
        raise ProtocolError("must be the wheel in base64", field="wheel")
    try:
        wheel_bytes = base64.b64decode(wheel_text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("is not valid base64", field="wheel") from None
    signed_body = json.dumps(signed, sort_keys=True, separators=(",", ":")).encode()
    return signed_body, wheel_bytes


def _release_json(release: StoredRelease) -> dict[str, Any]:
    m = release.manifest
    return {
        "version": m.version, "wheel": m.wheel, "size": m.size, "sha256": m.sha256,
        "published_at": _time(m.published_at), "key_id": m.key_id,
        "min_agent_version": m.min_agent_version, "max_agent_version": m.max_agent_version,
    }


def _plan_json(plan: RolloutPlan, agents: list[AgentView]) -> dict[str, Any]:
    versions = {a.vm_id: a.agent_version for a in agents}
    if plan.halted:
        status = "halted"
    elif plan.complete:
        status = "complete"
    else:
        status = "rolling_out"
    return {
        "status": status,
        "version": plan.state.version,
        "started_at": _time(plan.state.started_at),
        "halted": plan.halted,
        "halt_reason": plan.state.halt_reason,
        "batch_size": plan.batch_size,
        "waiting": plan.waiting,
        "batches": [
            {
                "index": b.index,
                "opened_at": _time(b.opened_at),
                "verdict": b.verdict.value,
                "counts": {s.value: b.count(s) for s in MemberStatus},
                "members": [
                    {"vm_id": vm, "status": s.value, "agent_version": versions.get(vm)}
                    for vm, s in b.members
                ],
            }
            for b in plan.batches
        ],
    }
