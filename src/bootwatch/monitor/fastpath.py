"""The batch fast path: permitted attestations of a VM in good standing.

Why: most outcome events a fleet sends (85% in the benchmark's mix) are a VM
attesting a boot it attested before, or rebooting into an approved image.  For
such an event the general path (``Monitor._apply_outcome`` on plain records)
loads every row the VM might need, runs the alert rules (which resolve nothing,
since nothing is open), refreshes the state and recommendations (which come out
as they were) and compares every loaded column to find what changed.  What it
finally stores is the outcome row, the boot's last-seen columns (or a new boot
and its documents) and the VM's last-outcome columns.  This module stores
exactly that, after checking that the general path would store nothing else.

An event of VM *v* takes the fast path when all of these hold, for it and for
every other event of *v* in the batch (else all of *v*'s events take the general
path, in order):

- *v* exists, is enabled, is bound to the event's provider and has no open alert (so
  no alert is resolved);
- the verdict is ``permit``, with a verified VM id and PCRs, and no revoked
  component (so no alert is raised);
- it is *v*'s latest event (not a late delivery, which is history only), and its
  quote advances *v*'s quote mark (not a replay: ``monitor/freshness.py``);
- its PCRs match a baseline variant of *v* or of its group (so no deviation, and
  no baseline to learn); the first matching variant by id is the boot's baseline,
  as in the general path;
- with the event applied, :func:`bootwatch.monitor.vmstate.evaluate_vm` (the same
  function the general path's refresh calls) gives recommendations whose digest
  is the one stored on *v* (so no recommendation row changes); the state and its
  reason are written as that function gives them.

Reads: four Core queries for the batch's candidate VMs (VMs, open alerts,
variants, boots by key).  Writes: one ``executemany`` per table and set of
changed columns, on the DB-API cursor (``monitor/rawsql.py``).  New boot ids are
allocated in event order by the caller, from the same counter as the general
path, so a batch stores the same ids as the events one at a time.
``tests/monitor/test_ingest_batch.py`` checks that a batch and the same events one
by one store identical rows, fast path or not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import Dialect, or_, select
from sqlalchemy.orm import Session

from bootwatch.lru import BoundedLru
from bootwatch.monitor.db import as_utc
from bootwatch.monitor.diff import matches
from bootwatch.monitor.freshness import advance, note_token
from bootwatch.monitor.health import ATTENTION
from bootwatch.monitor.models import (
    AlertRow,
    BaselineRow,
    BootDocumentRow,
    BootRow,
    OutcomeRow,
    VmRow,
)
from bootwatch.monitor.rawsql import RawWrite, raw_insert, raw_update
from bootwatch.monitor.vmstate import Evaluations, evaluate_vm
from bootwatch.protocol import token as t
from bootwatch.protocol.health import FailedHop
from bootwatch.protocol.monitor import OPEN_STATUSES
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

__all__ = ["FastPath", "FastPlan"]

_OPEN = tuple(s.value for s in OPEN_STATUSES)
_PERMIT = Verdict.PERMIT.value

#: the VM columns an event on the fast path may change
_VM_COLUMNS = ("last_outcome_at", "last_verdict", "last_reason", "last_alive_at", "issuer",
               "last_boot_id", "measured_secure_boot", "is_windows", "dbx_missing",
               "dbx_current", "aik_not_after", "state", "state_since", "attention",
               "state_reason", "open_alerts", "quote_aik", "quote_reset_count", "quote_clock",
               "quote_at", "last_token_id", "last_proven", "unproven_since",
               "unproven_alerted_at")
_VM_VALUES = itemgetter(*_VM_COLUMNS)
#: the boot columns an event on the fast path may change
_BOOT_COLUMNS = ("last_seen", "verdict", "reason", "policy_hash", "baseline_id")
#: a boot as the fast path reads it: (id, vm_id, boot_key, then the _BOOT_COLUMNS)
_BOOT_READ = (BootRow.id, BootRow.vm_id, BootRow.boot_key, BootRow.last_seen, BootRow.verdict,
              BootRow.reason, BootRow.policy_hash, BootRow.baseline_id)
_OUTCOME_INSERT = ("event_id", "vm_id", "time", "received_at", "provider", "verdict",
                   "reason", "failed_check", "boot_id")
_BOOT_INSERT = ("id", "vm_id", "boot_key", "reset_count", "pcr_bank", "pcrs", "verdict",
                "reason", "policy_hash", "baseline_id", "agent_version", "first_seen",
                "last_seen")
_DOC_INSERT = ("boot_id", "events", "claims")


class _Vm:
    """A VM's columns as loaded, changed in place by the planned events."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


class _Boot:
    """A boot the fast path touches: loaded (``loaded`` holds its columns as read) or new
    (``event`` made it; ``id`` is given when that event is applied, in batch order)."""

    __slots__ = ("baseline_id", "event", "id", "key", "last_seen", "loaded", "policy_hash",
                 "reason", "verdict", "vm_id")

    def __init__(self, vm_id: str, key: str, id_: int | None, values: tuple[Any, ...],
                 *, loaded: bool, event: OutcomeEvent | None = None) -> None:
        self.vm_id, self.key, self.id = vm_id, key, id_
        (self.last_seen, self.verdict, self.reason, self.policy_hash,
         self.baseline_id) = values
        self.loaded = values if loaded else None
        self.event = event

    def values(self) -> tuple[Any, ...]:
        return (self.last_seen, self.verdict, self.reason, self.policy_hash, self.baseline_id)


@dataclass
class FastPlan:
    """The batch's events that take the fast path, by ``id()`` of the event, with the
    boot each one lands on; the VMs they change (loaded and final columns)."""

    boots: dict[int, _Boot]
    #: by VM id: its columns as loaded, as the events leave them, and its last boot
    vms: dict[str, tuple[dict[str, Any], VmRow, _Boot]]

    def takes(self, ev: OutcomeEvent) -> bool:
        return id(ev) in self.boots


class FastPath:
    """Plans and writes a batch's fast events; owned by one monitor (its compiled
    statements are kept in a bounded map of its own)."""

    def __init__(self, *, stale_after: timedelta,
                 egress_text: Callable[[FailedHop, str], str] | None) -> None:
        self.stale_after = stale_after
        self.egress_text = egress_text
        self._writes: BoundedLru[tuple[str, str, tuple[str, ...]], RawWrite] = BoundedLru(256)

    # --- planning ---------------------------------------------------------------------

    def plan(self, session: Session, events: Sequence[OutcomeEvent], subjects: dict[int, str],
             keys: dict[int, str], now: datetime, evaluated: Evaluations) -> FastPlan:
        """Decide which of ``events`` (new ones, in batch order) take the fast path."""
        by_vm: dict[str, list[OutcomeEvent]] = {}
        for ev in events:
            vm_id = subjects[id(ev)]
            if vm_id:
                by_vm.setdefault(vm_id, []).append(ev)
        candidates = sorted(vm for vm, evs in by_vm.items() if all(
            ev.verdict is Verdict.PERMIT and ev.vm_id and ev.pcrs and not ev.revoked
            for ev in evs))
        plan = FastPlan({}, {})
        if not candidates:
            return plan
        conn = session.connection()
        vm_cols = tuple(VmRow.__table__.columns)
        names = tuple(c.key for c in vm_cols)
        n = len(names)
        # each VM with its last boot (a repeat lands on it); one query, by primary keys
        rows: list[dict[str, Any]] = []
        boots: dict[tuple[str, str], tuple[int, tuple[Any, ...]]] = {}
        for r in conn.execute(
                select(*vm_cols, *_BOOT_READ).select_from(VmRow.__table__)
                .outerjoin(BootRow, BootRow.id == VmRow.last_boot_id)
                .where(VmRow.vm_id.in_(candidates), VmRow.enabled.is_(True))).all():
            rows.append(dict(zip(names, r[:n], strict=True)))
            if r[n] is not None:
                boots[(r[n + 1], r[n + 2])] = (r[n], tuple(r[n + 3:]))
        if not rows:
            return plan
        ids = [r["vm_id"] for r in rows]
        # events on another known boot (rare: an older boot again): looked up by VM and key
        other = {(vm, keys[id(ev)]) for vm in ids for ev in by_vm[vm]} - boots.keys()
        if other:
            for b in conn.execute(select(*_BOOT_READ).where(
                    BootRow.vm_id.in_(sorted({v for v, _ in other})),
                    BootRow.boot_key.in_(sorted({k for _, k in other})))).all():
                if (b[1], b[2]) in other:
                    boots[(b[1], b[2])] = (b[0], tuple(b[3:]))
        alerted = set(conn.execute(select(AlertRow.vm_id).where(
            AlertRow.vm_id.in_(ids), AlertRow.status.in_(_OPEN)).distinct()).scalars())
        groups = sorted({r["group_name"] for r in rows if r["group_name"]})
        cond = [BaselineRow.vm_id.in_(ids)]
        if groups:
            cond.append(BaselineRow.group_name.in_(groups))
        variants_vm: dict[str, list[tuple[int, dict[int, str]]]] = {}
        variants_group: dict[str, list[tuple[int, dict[int, str]]]] = {}
        parsed: dict[str, dict[int, str]] = {}
        for bid, bvm, bgroup, pcrs_text in conn.execute(
                select(BaselineRow.id, BaselineRow.vm_id, BaselineRow.group_name,
                       BaselineRow.pcrs).where(or_(*cond)).order_by(BaselineRow.id)).all():
            pcrs = parsed.get(pcrs_text)
            if pcrs is None:
                pcrs = parsed[pcrs_text] = _pcrs(pcrs_text)
            if bvm is not None:
                variants_vm.setdefault(bvm, []).append((bid, pcrs))
            elif bgroup is not None:
                variants_group.setdefault(bgroup, []).append((bid, pcrs))
        for row in rows:
            vm_id = row["vm_id"]
            if vm_id in alerted:
                continue
            group = row["group_name"]
            variants = variants_vm.get(vm_id, []) + (variants_group.get(group, []) if group
                                                      else [])
            variants.sort(key=lambda v: v[0])
            if not variants:
                continue
            self._plan_vm(plan, row, by_vm[vm_id], variants, boots, keys, now, evaluated)
        return plan

    def _plan_vm(self, plan: FastPlan, loaded: dict[str, Any], evs: list[OutcomeEvent],
                 variants: list[tuple[int, dict[int, str]]],
                 stored: dict[tuple[str, str], tuple[int, tuple[Any, ...]]],
                 keys: dict[int, str], now: datetime, evaluated: Evaluations) -> None:
        vm = cast(VmRow, _Vm(loaded))
        vm_id: str = loaded["vm_id"]
        mine: dict[str, _Boot] = {}
        landed: list[tuple[OutcomeEvent, _Boot]] = []
        for ev in evs:
            if vm.last_outcome_at is not None and ev.time < as_utc(vm.last_outcome_at):
                return  # a late delivery: history only (the general path)
            if ev.provider != vm.provider:
                return  # not yet bound, or another provider's (the general path decides)
            if advance(vm, ev) is not None:
                return  # a replay (the general path raises its alert)
            pcrs = dict(ev.pcrs)
            match = next((bid for bid, base in variants if matches(base, pcrs)), None)
            if match is None:
                return  # a deviation (the general path raises its alert)
            key = keys[id(ev)]
            boot = mine.get(key)
            known = stored.get((vm_id, key)) if boot is None else None
            if boot is None and known is None:  # a new boot, as the general path makes it
                boot = mine[key] = _Boot(vm_id, key, None, (ev.time, "", "", "", None),
                                         loaded=False, event=ev)
            else:
                if boot is None:
                    assert known is not None
                    boot = mine[key] = _Boot(vm_id, key, known[0], known[1], loaded=True)
                boot.last_seen = max(as_utc(boot.last_seen), ev.time)
            reason = ev.reason[:4000]
            boot.verdict, boot.reason, boot.policy_hash = _PERMIT, reason, ev.policy_hash
            boot.baseline_id = match
            vm.last_outcome_at = ev.time
            vm.last_verdict = _PERMIT
            vm.last_reason = reason
            note_token(vm, ev, now)
            vm.last_alive_at = now
            if ev.issuer:
                vm.issuer = ev.issuer[:512]
            vm.measured_secure_boot = ev.secure_boot
            windows = dict(ev.claims).get(t.IS_WINDOWS)
            if isinstance(windows, bool):
                vm.is_windows = windows
            vm.dbx_missing = ev.dbx_missing
            vm.dbx_current = ev.dbx_current
            if ev.aik_not_after is not None:
                vm.aik_not_after = ev.aik_not_after
            result = evaluate_vm(vm, integrity=(), last_boot_matched=True, now=now,
                                 stale_after=self.stale_after, egress_text=self.egress_text,
                                 evaluated=evaluated)
            if result.digest != vm.recommendations_digest:
                return  # recommendation rows change (the general path writes them)
            if result.state.value != vm.state:
                vm.state = result.state.value
                vm.state_since = now
            vm.attention = ATTENTION[result.state]
            vm.state_reason = result.reason
            vm.open_alerts = 0
            landed.append((ev, boot))
        for ev, boot in landed:
            plan.boots[id(ev)] = boot
        plan.vms[vm_id] = (loaded, vm, landed[-1][1])

    # --- writing ----------------------------------------------------------------------

    def write(self, session: Session, plan: FastPlan, events: Sequence[OutcomeEvent],
              now: datetime, *, events_json: Callable[[OutcomeEvent], str],
              claims_json: Callable[[OutcomeEvent], str],
              pcrs_json: Callable[[OutcomeEvent], str]) -> None:
        """Store the planned events (every new boot has its id by now)."""
        if not plan.boots:
            return
        dialect = session.get_bind().dialect
        outcomes, new_boots, docs = [], [], []
        touched: dict[int, _Boot] = {}
        for ev in events:
            boot = plan.boots.get(id(ev))
            if boot is None:
                continue
            outcomes.append((ev.event_id, boot.vm_id, ev.time, now, ev.provider, _PERMIT,
                             ev.reason[:4000], ev.failed_check, boot.id))
            touched[id(boot)] = boot
        for boot in touched.values():
            made = boot.event
            if boot.loaded is None and made is not None:
                new_boots.append((boot.id, boot.vm_id, boot.key, made.reset_count,
                                  made.pcr_bank, pcrs_json(made), boot.verdict, boot.reason,
                                  boot.policy_hash, boot.baseline_id, "", made.time,
                                  boot.last_seen))
                docs.append((boot.id, events_json(made), claims_json(made)))
        memo: dict[tuple[int, int], Any] = {}
        self._insert(dialect, OutcomeRow, _OUTCOME_INSERT).executemany(session, outcomes, memo)
        self._insert(dialect, BootRow, _BOOT_INSERT).executemany(session, new_boots, memo)
        self._insert(dialect, BootDocumentRow, _DOC_INSERT).executemany(session, docs, memo)
        changed_boots: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for boot in touched.values():
            if boot.loaded is not None:
                cols, vals = _changed(_BOOT_COLUMNS, boot.loaded, boot.values())
                if cols:
                    changed_boots.setdefault(cols, []).append((*vals, boot.id))
        for cols, rows in changed_boots.items():
            self._update(dialect, BootRow, cols, ("id",)).executemany(session, rows, memo)
        changed_vms: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for vm_id, (loaded, vm, last_boot) in plan.vms.items():
            vm.last_boot_id = last_boot.id
            cols, vals = _changed(_VM_COLUMNS, _VM_VALUES(loaded), _VM_VALUES(vars(vm)))
            if cols:
                changed_vms.setdefault(cols, []).append((*vals, vm_id))
        for cols, rows in changed_vms.items():
            self._update(dialect, VmRow, cols, ("vm_id",)).executemany(session, rows, memo)

    def _insert(self, dialect: Dialect, cls: type[Any], cols: tuple[str, ...]) -> RawWrite:
        key = (cls.__tablename__, "insert", cols)
        return self._writes.get_or_compute(
            key, lambda: raw_insert(cls.__table__, cols, dialect))

    def _update(self, dialect: Dialect, cls: type[Any], cols: tuple[str, ...],
                pk: tuple[str, ...]) -> RawWrite:
        key = (cls.__tablename__, "update", cols)
        return self._writes.get_or_compute(
            key, lambda: raw_update(cls.__table__, cols, pk, dialect))


def _changed(columns: tuple[str, ...], before: tuple[Any, ...],
             after: tuple[Any, ...]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The columns whose value changed, and their new values (as ``RowSet.flush`` decides:
    a value that is not the loaded object and not equal to it)."""
    if before == after:
        return (), ()
    cols, vals = [], []
    for c, old, new in zip(columns, before, after, strict=True):
        if new is not old and new != old:
            cols.append(c)
            vals.append(new)
    return tuple(cols), tuple(vals)


def _pcrs(text: str) -> dict[int, str]:
    return {int(k): str(v) for k, v in json.loads(text).items()}
