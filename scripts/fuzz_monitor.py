#!/usr/bin/env python3
"""Randomised differential test of the monitor's batch fast path, plus invariants.

Usage:  scripts/fuzz_monitor.py [--seeds FROM TO] [--steps N] [--minimise]

Why: ``Monitor.ingest_outcomes`` sends the events of a VM in good standing through
the batch fast path (``bootwatch/monitor/fastpath.py``), which claims to store
exactly what the general path (``Monitor._apply_outcome``, one event at a time)
would.  This checks that claim on random operation sequences, and checks the
monitor's invariants along the way (they hold whichever path ran).

Each seed draws a random sequence of monitor operations (enable, disable,
approve, suppress, remove a baseline variant, set an alert's status, agents'
health reports, sweeps, time passing, and outcome events of a few VMs whose
facts drift: late deliveries, duplicates, other providers, new images, reboots,
denials, revoked components, claimed-only ids) and applies it to two fresh
SQLite databases: one ingests each step's outcome events in random batches (so
the fast path is taken), the other ingests each event alone (the general path).
After every step the two must return the same results and hold the same rows in
every monitor table (alert and webhook-delivery ids excluded: they are uuid4),
and each database must satisfy the invariants in :func:`check_invariants`
(open-alert counts, one open alert per reason, the state its rows give, a stale
VM has its alert, provider binding, boots matched only to variants they match,
a healthy VM's boot matches a variant, ...).

Prints one line per seed (operations, events that took the fast path).  Exit 0
when every seed passes; 1 on the first divergence, invariant violation or crash,
with the seed, the step and the detail (``--minimise`` also prints the shortest
operation sequence found that fails the same way, as JSON, one operation a
line); 2 on a usage error.  The default (seeds 0..49, 80 steps) takes about three
minutes; ``tests/monitor/test_batch_differential.py`` runs two short seeds in the suite.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bootwatch.monitor.core import CheckedReport, Monitor, MonitorError
from bootwatch.monitor.db import make_engine, run_migrations
from bootwatch.monitor.diff import matches
from bootwatch.monitor.fastpath import FastPath, FastPlan
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import VmRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.vmstate import evaluate_vm
from bootwatch.protocol.health import FailedHop, HealthReport, HealthStatus
from bootwatch.protocol.monitor import INTEGRITY_REASONS, AlertReason, AlertStatus, VmState
from bootwatch.protocol.outcome import BootEvent, OutcomeEvent, RevokedItem, Verdict

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "Failure",
    "FastCount",
    "check_invariants",
    "check_seed",
    "count_fast_path",
    "gen_ops",
    "main",
    "make_template",
    "minimise",
    "ops_for_seed",
    "run",
]

Op = dict[str, Any]

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STALE = 600
VMS = [str(uuid.UUID(int=i + 1)).upper() for i in range(4)]
PROVIDERS = ["pa", "pb"]
ISSUER = {p: f"https://att.example/providers/{p}" for p in PROVIDERS}
#: the AIK names a VM's quotes can carry (a re-enrolment changes it)
AIKS = ["000b" + "a1" * 32, "000b" + "b2" * 32]
#: probability of a permit/deny naming its VM by a claimed id only (history only;
#: it once failed its whole batch with an AssertionError)
ODD_CLAIMED = 0.02


def _ev(pcr: int, i: int, digest: str, comp: str) -> BootEvent:
    return BootEvent(i, pcr, "EV_EFI_BOOT_SERVICES_APPLICATION", digest, comp)


_BASE_EVENTS = (_ev(0, 0, "a0" * 32, "fw"), _ev(4, 1, "a4" * 32, "shim"),
                _ev(4, 2, "b4" * 32, "grub"), _ev(7, 3, "a7" * 32, "db"))
#: the boot images a VM can run: PCRs and the event log that gives them
IMAGES: list[tuple[dict[int, str], tuple[BootEvent, ...]]] = [
    ({0: "00" * 32, 4: "04" * 32, 7: "07" * 32}, _BASE_EVENTS),
    ({0: "00" * 32, 4: "44" * 32, 7: "07" * 32},
     tuple(_ev(4, e.index, "c4" * 32, "grub-v2") if e.component == "grub" else e
           for e in _BASE_EVENTS)),
    ({0: "00" * 32, 4: "04" * 32, 7: "77" * 32},
     tuple(_ev(7, e.index, "c7" * 32, "db") if e.pcr == 7 else e for e in _BASE_EVENTS)),
]


class Clock:
    """The monitor's clock, set by the runner before every operation."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


# --- operations ------------------------------------------------------------------------
# an operation is a plain dict, so a failing sequence prints as data and replays


def make_event(d: Op) -> OutcomeEvent:
    """The outcome event an ``ingest`` operation's event dict describes."""
    pcrs, events = IMAGES[d["image"]]
    verdict = Verdict(d["verdict"])
    vm = VMS[d["vm"]]
    if d.get("lower"):
        vm = vm.lower()
    verified = d["verified"]
    return OutcomeEvent(
        event_id=d["id"], time=T0 + timedelta(seconds=d["t"]), provider=d["provider"],
        attestation_type="AzureGuest", verdict=verdict,
        reason=f"{verdict.value} at {d['t']}", policy_hash="h" * 43,
        failed_check="quote" if verdict is Verdict.EVIDENCE_REJECTED else None,
        deciding_rule="r1" if verdict is Verdict.DENY else None,
        vm_id=vm if verified else None, claimed_vm_id=None if verified else vm,
        pcrs=pcrs if d["with_pcrs"] else {}, events=events if d["with_pcrs"] else (),
        reset_count=d["reset"], secure_boot=d["sb"],
        claims=(() if d["win"] is None else (("x-ms-azurevm-is-windows", d["win"]),)),
        revoked=((RevokedItem(1, "shim", "aa" * 32, "CVE-2023-40547"),)
                 if d["revoked"] else ()),
        dbx_missing=d["dbx"], dbx_current=None if d["dbx"] is None else 10,
        aik_not_after=(T0 + timedelta(days=d["aik"], hours=12)
                       if d["aik"] is not None else None),
        issuer=ISSUER[d["provider"]] if d["issuer"] else "",
        # the quote's clock and AIK (monitor/freshness.py); absent in older recordings
        tpm_clock=d.get("clock"), aik=AIKS[d["aikname"]] if "aikname" in d else "",
        # the issued token's jti (token proof): a permit's own, absent in older recordings
        token_id=f"tok-{d['id']}" if verdict is Verdict.PERMIT and "clock" in d else "")


def gen_ops(rng: random.Random, steps: int, nvms: int) -> list[Op]:
    """Random operations.  ``noise`` (drawn per sequence) is how often an event departs
    from its VM's usual facts (home provider, current image, its OS, Secure Boot, DBX
    and AIK facts), so low-noise sequences mostly take the fast path and high-noise
    ones mostly do not."""
    noise = rng.choice([0.02, 0.05, 0.1, 0.2, 0.4])
    ops: list[Op] = []
    t = 0  # the clock, seconds after T0
    used_ids: list[str] = []
    home = {v: rng.choice(PROVIDERS) for v in range(nvms)}
    facts: dict[int, dict[str, Any]] = {
        v: {"sb": rng.choice([True, True, False, None]),
            "win": rng.choice([False, False, True, None]),
            "dbx": rng.choice([None, 0, 2]), "aik": rng.choice([None, 400, 10]),
            "image": 0, "reset": 1}
        for v in range(nvms)}
    n_ev = 0
    if rng.random() < 0.9:  # most sequences start with the VMs enabled
        for v in range(nvms):
            if rng.random() < 0.9:
                ops.append({"op": "enable", "vm": v,
                            "group": rng.choice([None, None, "g1", "g2"]),
                            "provider": rng.choice([None, None, home[v]])})

    def odd() -> bool:
        return rng.random() < noise

    for _ in range(steps):
        r = rng.random()
        if r < 0.45:
            evs: list[Op] = []
            for _ in range(rng.randint(1, 8)):
                if used_ids and rng.random() < 0.08:
                    evs.append({"dup": rng.choice(used_ids)})
                    continue
                n_ev += 1
                eid = f"e{n_ev}"
                used_ids.append(eid)
                v = rng.randrange(nvms)
                f = facts[v]
                if rng.random() < noise / 2:  # the VM changes (reboot, update, OS)
                    f["reset"] += 1
                    if rng.random() < 0.5:
                        f["image"] = rng.choice([0, 1, 2])
                    if rng.random() < 0.3:
                        f["win"] = rng.choice([False, True, None])
                    if rng.random() < 0.3:
                        f["dbx"] = rng.choice([None, 0, 2])
                verdict = (rng.choices(["permit", "deny", "evidence_rejected"], [6, 2, 2])[0]
                           if odd() else "permit")
                verified = verdict != "evidence_rejected" or rng.random() < 0.5
                if verdict != "evidence_rejected" and rng.random() < ODD_CLAIMED:
                    verified = False  # a permit or deny by a claimed id only
                late = odd()
                at = t + len(evs) - (rng.choice([1, 5, 30, 120, 900]) if late else 0)
                # the quote's clock follows the answer's time; a replay sends an older one
                replay = odd() and rng.random() < 0.3
                evs.append({
                    "id": eid, "vm": v, "lower": rng.random() < 0.1,
                    "t": at,
                    "clock": max(0, at - (rng.choice([1, 60, 600]) if replay else 0)) * 1000,
                    "aikname": rng.choice([0, 1]) if odd() else 0,
                    "provider": rng.choice(PROVIDERS) if odd() else home[v],
                    "verdict": verdict, "verified": verified,
                    "with_pcrs": verified and (verdict != "evidence_rejected"
                                               or rng.random() < 0.5),
                    "image": rng.choice([0, 1, 2]) if odd() else f["image"],
                    "reset": rng.choice([1, 2, 3]) if odd() else f["reset"],
                    "sb": rng.choice([True, False, None]) if odd() else f["sb"],
                    "win": rng.choice([False, True, None]) if odd() else f["win"],
                    "revoked": odd() and rng.random() < 0.3,
                    "dbx": rng.choice([None, 0, 2]) if odd() else f["dbx"],
                    "aik": rng.choice([None, 400, 10]) if odd() else f["aik"],
                    "issuer": not odd(),
                })
                if evs[-1]["verified"] and odd() and rng.random() < 0.5:
                    # an attestation of the same boot crossing this one in flight: a
                    # newer quote answered a little earlier, delivered after it (the
                    # crossing leniency's late branch; found in review to break the
                    # batch/one-by-one equality), sometimes with another verdict
                    n_ev += 1
                    partner = dict(evs[-1], id=f"e{n_ev}")
                    used_ids.append(partner["id"])
                    partner["t"] = at - rng.choice([1, 4, 30, 200])
                    partner["clock"] = evs[-1]["clock"] + rng.choice([1, 5, 60, 200]) * 1000
                    if rng.random() < 0.3:
                        partner["verdict"] = rng.choice(["permit", "deny"])
                        partner["revoked"] = rng.random() < 0.3
                    evs.append(partner)
            # where the batch side splits the step's events into separate calls
            cuts = sorted({rng.randint(1, len(evs)) for _ in range(rng.randint(0, 2))})
            ops.append({"op": "ingest", "events": evs, "cuts": cuts})
            ops.append({"op": "advance", "s": rng.choice([10, 10, 60])})
            t += ops[-1]["s"]
        elif r < 0.54:
            v = rng.randrange(nvms)
            ops.append({"op": "enable", "vm": v,
                        "group": rng.choice([None, None, "g1", "g2", ""]),
                        "provider": (rng.choice(PROVIDERS) if odd()
                                     else rng.choice([None, None, home[v]]))})
        elif r < 0.56 and odd():
            ops.append({"op": "disable", "vm": rng.randrange(nvms)})
        elif r < 0.56 and odd():
            ops.append({"op": "accept_rollback", "vm": rng.randrange(nvms)})
        elif r < 0.63:
            ops.append({"op": "approve", "vm": rng.randrange(nvms),
                        "group": rng.random() < 0.3,
                        "boot": rng.choice([None, None, None, 1, 2, 3, 4])})
        elif r < 0.66:
            ops.append({"op": "suppress", "vm": rng.randrange(nvms),
                        "group": rng.choice([None, None, "g1"]),
                        "reason": rng.choice([None, "baseline_deviation", "policy_denied",
                                              "evidence_rejected", "agent_unresponsive",
                                              "revoked_boot_component"])})
        elif r < 0.68:
            ops.append({"op": "unsuppress", "id": rng.randint(1, 3)})
        elif r < 0.70:
            ops.append({"op": "remove_baseline", "id": rng.randint(1, 4)})
        elif r < 0.73:
            ops.append({"op": "alert_status", "vm": rng.randrange(nvms),
                        "reason": rng.choice([a.value for a in AlertReason]),
                        "status": rng.choice(["in_progress", "resolved", "dismissed"])})
        elif r < 0.84:
            reps = []
            for _ in range(rng.choice([1, 1, 2, 3, 4])):
                n_ev += 1
                reps.append({"id": f"r{n_ev}" if rng.random() > 0.05 else "r-dup",
                             "vm": rng.randrange(nvms),
                             "status": rng.choice(["Healthy", "Healthy", "Unhealthy",
                                                   "PlatformError"]),
                             "verified": rng.random() < 0.6,
                             "issuer": rng.choice([None, *PROVIDERS]),
                             # the token it carries (token proof): a recent event's
                             "tok": rng.choice(used_ids[-6:]) if used_ids else None})
            ops.append({"op": "reports", "reports": reps})
        elif r < 0.92:
            dt = rng.choice([STALE + 1, STALE + 60, 2 * STALE, 30])
            ops.append({"op": "advance", "s": dt})
            t += dt
        else:
            ops.append({"op": "sweep"})
    return ops


def ops_for_seed(seed: int, steps: int) -> list[Op]:
    """The operation sequence of ``seed`` (2 to 4 VMs, ``steps`` random steps)."""
    rng = random.Random(seed)
    return gen_ops(rng, steps, rng.choice([2, 3, 4]))


# --- applying operations ---------------------------------------------------------------


@dataclass
class World:
    """One database and the monitor on it."""

    engine: Engine
    mon: Monitor
    clock: Clock
    path: Path


def _new_world(template: Path, tmp: Path, name: str, webhooks: bool) -> World:
    path = tmp / f"{name}.db"
    shutil.copy(template, path)
    engine = make_engine(f"sqlite:///{path}")
    clock = Clock()
    # token proof required within a third of the stale window (attestation_unproven)
    settings = (MonitorSettings(stale_after_seconds=STALE, webhooks=("http://hook.example/",),
                                webhook_secret="s" * 32, token_proof_seconds=STALE / 3)
                if webhooks else MonitorSettings(stale_after_seconds=STALE,
                                                 token_proof_seconds=STALE / 3))
    mon = Monitor(engine, settings, metrics=MonitorMetrics(), clock=clock)
    return World(engine, mon, clock, path)


def make_template(folder: Path) -> Path:
    """A migrated, empty monitor database in ``folder``, copied for every world."""
    path = folder / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        run_migrations(engine)
    finally:
        engine.dispose()
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _events_of(op: Op, all_events: dict[str, Op]) -> list[OutcomeEvent]:
    return [make_event(all_events[d["dup"]] if "dup" in d else d) for d in op["events"]]


def _apply(w: World, op: Op, batch: bool, all_events: dict[str, Op], t_now: int) -> Any:
    """Apply ``op``; return what the monitor returned (or the MonitorError it raised)."""
    m = w.mon
    w.clock.now = T0 + timedelta(seconds=t_now)
    kind = op["op"]
    try:
        if kind == "ingest":
            evs = _events_of(op, all_events)
            if batch:
                out: list[bool] = []
                bounds = [0, *op["cuts"], len(evs)]
                for a, b in itertools.pairwise(bounds):
                    if b > a:
                        out += m.ingest_outcomes(evs[a:b])
                return out
            return [m.ingest_outcomes([e])[0] for e in evs]
        if kind == "enable":
            return m.enable(VMS[op["vm"]], group=op["group"], provider=op["provider"])
        if kind == "disable":
            return m.disable(VMS[op["vm"]])
        if kind == "accept_rollback":
            return m.accept_vtpm_rollback(VMS[op["vm"]], by="op")
        if kind == "approve":
            return m.approve(VMS[op["vm"]], boot_id=op["boot"], group=op["group"])
        if kind == "suppress":
            reason = AlertReason(op["reason"]) if op["reason"] else None
            if op["group"]:
                return m.add_suppression(vm=None, group=op["group"], reason=reason, note="n")
            return m.add_suppression(vm=VMS[op["vm"]], group=None, reason=reason, note="n")
        if kind == "unsuppress":
            return m.remove_suppression(op["id"])
        if kind == "remove_baseline":
            return m.remove_baseline(op["id"])
        if kind == "alert_status":
            with sqlite3.connect(w.path) as c:
                row = c.execute("SELECT id FROM monitor_alerts WHERE vm_id=? AND reason=? AND "
                                "status IN ('active','in_progress')",
                                (VMS[op["vm"]], op["reason"])).fetchone()
            if row is None:
                return "no-alert"
            return m.set_alert_status(row[0], AlertStatus(op["status"]), by="op")
        if kind == "reports":
            checked = []
            for d in op["reports"]:
                vm = VMS[d["vm"]]
                st = HealthStatus(d["status"])
                kw: dict[str, Any] = {}
                if st is HealthStatus.PLATFORM_ERROR:
                    kw = {"platform_error_message": "cannot reach",
                          "failed_hop": FailedHop.TLS, "failed_target": "att.example:443"}
                rep = HealthReport(d["id"], vm, st, T0, "1.0", boot_counter=1, **kw)
                issuer = ISSUER[d["issuer"]] if d["issuer"] and d["verified"] else ""
                tok = f"tok-{d['tok']}" if d.get("tok") and d["verified"] else ""
                checked.append(CheckedReport(rep, vm, d["verified"],
                                             "" if d["verified"] else "no token", issuer, tok))
            res = (m.store_reports(checked) if batch
                   else [m.store_reports([c])[0] for c in checked])
            return [(r.stored, r.verified, r.why_unverified) for r in res]
        if kind == "advance":
            return None
        if kind == "sweep":
            return m.sweep()
    except MonitorError as exc:
        return f"{type(exc).__name__}: {exc}"
    raise ValueError(f"unknown operation {kind!r}")


# --- comparing databases ---------------------------------------------------------------

TABLES = ("monitor_vms", "monitor_boots", "monitor_boot_documents", "monitor_outcomes",
          "monitor_reports", "monitor_baselines", "monitor_alerts", "monitor_recommendations",
          "monitor_suppressions", "monitor_webhook_deliveries")
#: columns that legitimately differ: random uuid4s (alert ids, delivery ids)
SKIP = {"monitor_alerts": {"id"}, "monitor_webhook_deliveries": {"id"}}

Dump = dict[str, list[tuple[tuple[str, Any], ...]]]


def _norm_body(body: str) -> str:
    d = json.loads(body)
    d.pop("delivery_id", None)
    d["alert"].pop("id", None)
    return json.dumps(d, sort_keys=True)


def _dump(path: Path) -> Dump:
    out: Dump = {}
    with sqlite3.connect(path) as c:
        for table in TABLES:
            cur = c.execute(f"SELECT * FROM {table}")  # noqa: S608 (a constant name)
            cols = [d[0] for d in cur.description]
            rows = []
            for r in cur.fetchall():
                row = dict(zip(cols, r, strict=True))
                for k in SKIP.get(table, ()):
                    row.pop(k)
                if table == "monitor_webhook_deliveries":
                    row["body"] = _norm_body(row["body"])
                rows.append(tuple(sorted(row.items())))
            out[table] = sorted(rows, key=repr)
    return out


def _diff_dumps(a: Dump, b: Dump) -> list[str]:
    msgs = []
    for table in TABLES:
        ra, rb = a[table], b[table]
        if ra == rb:
            continue
        sa, sb = set(ra), set(rb)
        only_a = [dict(r) for r in ra if r not in sb]
        only_b = [dict(r) for r in rb if r not in sa]
        msgs += [f"{table} BATCH only: {x}" for x in only_a]
        msgs += [f"{table} SINGLE only: {y}" for y in only_b]
        if not only_a and not only_b:
            msgs.append(f"{table}: multiplicity differs ({len(ra)} vs {len(rb)})")
    return msgs


# --- invariants ------------------------------------------------------------------------


def _json_pcrs(text: str) -> dict[int, str]:
    return {int(k): v for k, v in json.loads(text).items()}


class _Vm:
    """A VM row's columns as attributes (what evaluate_vm reads)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


def check_invariants(engine: Engine, path: Path, now: datetime, rebound: set[str]) -> list[str]:
    """What must hold in one database whichever path stored it; ``rebound``: VMs whose
    provider binding was ever set by an operation (their older boots may be another
    provider's).  Returns the violations (none: [])."""
    bad = []
    with engine.connect() as conn:
        vms = [dict(r._mapping) for r in conn.execute(VmRow.__table__.select())]
    c = sqlite3.connect(path)
    try:
        sups = c.execute("SELECT vm_id, group_name, reason FROM monitor_suppressions").fetchall()
        for vm in vms:
            vid = vm["vm_id"]
            open_ = c.execute("SELECT reason, status FROM monitor_alerts WHERE vm_id=? AND "
                              "status IN ('active','in_progress')", (vid,)).fetchall()
            if vm["open_alerts"] != len(open_):
                bad.append(f"{vid}: open_alerts={vm['open_alerts']} but {len(open_)} open rows")
            reasons = [r for r, _ in open_]
            if len(set(reasons)) != len(reasons):
                bad.append(f"{vid}: duplicate open alerts {sorted(reasons)}")
            if not vm["enabled"] and open_:
                bad.append(f"{vid}: disabled with open alerts {reasons}")
            # the state from the stored rows, as the refresh computes it
            integrity = tuple(sorted({r for r in reasons
                                      if AlertReason(r) in INTEGRITY_REASONS}))
            matched = False
            if vm["last_boot_id"] is not None:
                bid = c.execute("SELECT baseline_id FROM monitor_boots WHERE id=?",
                                (vm["last_boot_id"],)).fetchone()
                variants = {r[0] for r in c.execute(
                    "SELECT id FROM monitor_baselines WHERE vm_id=? OR (group_name=? AND ?<>'')",
                    (vid, vm["group_name"], vm["group_name"]))}
                matched = bool(bid and bid[0] in variants)
            ev = evaluate_vm(_Vm(vm), integrity=integrity,  # type: ignore[arg-type]
                             last_boot_matched=matched, now=now,
                             stale_after=timedelta(seconds=STALE), egress_text=None,
                             evaluated={})
            if ev.state.value != vm["state"] and ev.state is not VmState.STALE:
                bad.append(f"{vid}: state {vm['state']} ({vm['state_reason']!r}) but its rows "
                           f"give {ev.state.value} ({ev.reason!r})")
            elif ev.state.value == vm["state"]:
                recs = set(c.execute(
                    "SELECT key, code, cause, description, remediation FROM "
                    "monitor_recommendations WHERE vm_id=?", (vid,)))
                want = {(r.definition.key, r.code.value, r.cause, r.description, r.remediation)
                        for r in ev.results}
                if recs != want and ev.reason == vm["state_reason"]:
                    bad.append(f"{vid}: recommendation rows differ from evaluation: "
                               f"{sorted(recs ^ want)[:2]}")
            if vm["state"] == "stale" and "agent_unresponsive" not in reasons:
                suppressed = any((s[0] == vid or (vm["group_name"] and s[1] == vm["group_name"]))
                                 and s[2] in (None, "agent_unresponsive") for s in sups)
                by_operator = c.execute(
                    "SELECT 1 FROM monitor_alerts WHERE vm_id=? AND reason='agent_unresponsive' "
                    "AND status_changed_by='op'", (vid,)).fetchone()
                if not suppressed and not by_operator:  # an operator may close it by hand
                    bad.append(f"{vid}: stale without an open agent_unresponsive alert")
            # binding: boots are made by verified outcomes of the bound provider only
            if vid not in rebound and vm["provider"]:
                rows = c.execute("SELECT event_id, provider, verdict FROM monitor_outcomes "
                                 "WHERE vm_id=? AND boot_id IS NOT NULL", (vid,)).fetchall()
                for eid, prov, verdict in rows:
                    if prov != vm["provider"] or verdict == "evidence_rejected":
                        bad.append(f"{vid}: outcome {eid} of {prov}/{verdict} has a boot "
                                   f"(bound to {vm['provider']})")
            if vm["last_boot_id"] is not None:
                owner = c.execute("SELECT vm_id FROM monitor_boots WHERE id=?",
                                  (vm["last_boot_id"],)).fetchone()
                if owner is None or owner[0] != vid:
                    bad.append(f"{vid}: last_boot_id {vm['last_boot_id']} not its boot")
        # a boot points only at a variant whose PCRs it matches
        for bid_, bvm, bpcrs, base_id, base_pcrs in c.execute(
                "SELECT b.id, b.vm_id, b.pcrs, b.baseline_id, v.pcrs FROM monitor_boots b "
                "JOIN monitor_baselines v ON v.id=b.baseline_id"):
            if not matches(_json_pcrs(base_pcrs), _json_pcrs(bpcrs)):
                bad.append(f"boot {bid_} of {bvm} points at variant {base_id}, which it does "
                           "not match")
        # a healthy VM's current boot matches one of its variants (its own or its group's)
        for vm in vms:
            if vm["state"] != "healthy" or vm["last_boot_id"] is None:
                continue
            bp = c.execute("SELECT pcrs FROM monitor_boots WHERE id=?",
                           (vm["last_boot_id"],)).fetchone()
            variants_pcrs = [_json_pcrs(r[0]) for r in c.execute(
                "SELECT pcrs FROM monitor_baselines WHERE vm_id=? OR (group_name=? AND ?<>'')",
                (vm["vm_id"], vm["group_name"], vm["group_name"]))]
            if not any(matches(v, _json_pcrs(bp[0])) for v in variants_pcrs):
                bad.append(f"{vm['vm_id']}: healthy, but its current boot "
                           f"{vm['last_boot_id']} matches none of its variants")
        # an outcome's boot is a boot of the outcome's VM
        for eid, vm_id, boot_vm in c.execute(
                "SELECT o.event_id, o.vm_id, b.vm_id FROM monitor_outcomes o JOIN monitor_boots b "
                "ON b.id=o.boot_id"):
            if vm_id != boot_vm:
                bad.append(f"outcome {eid} of {vm_id} points at a boot of {boot_vm}")
    finally:
        c.close()
    return bad


# --- running ---------------------------------------------------------------------------


@dataclass
class Failure:
    """The first step at which the two databases (or one's invariants) went wrong."""

    step: int
    kind: str  # "result" | "diverge" | "invariant:batch" | "invariant:single" | "crash:..."
    detail: list[str]

    def signature(self) -> str:
        """The kind of failure without its VM ids (what minimising keeps)."""
        first = self.detail[0] if self.detail else ""
        first = re.sub(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                       r"[0-9A-Fa-f]{12}: ", "", first)
        return self.kind + "|" + " ".join(first.split()[:3])


def run(ops: list[Op], template: Path, *, invariants: bool = True,
        webhooks: bool = True) -> Failure | None:
    """Apply ``ops`` to two copies of ``template`` (batches vs one event per call),
    compare after every step; the first failure, or None."""
    with tempfile.TemporaryDirectory(prefix="bootwatch-fuzz-monitor-") as d:
        tmp = Path(d)
        wb = _new_world(template, tmp, "batch", webhooks)
        ws = _new_world(template, tmp, "single", webhooks)
        try:
            all_events: dict[str, Op] = {}
            t = 0
            rebound: set[str] = set()
            for i, op in enumerate(ops):
                if op["op"] == "ingest":
                    all_events.update((e["id"], e) for e in op["events"] if "id" in e)
                elif op["op"] == "advance":
                    t += op["s"]
                elif op["op"] == "enable" and op["provider"]:
                    rebound.add(VMS[op["vm"]])
                res = []
                for w, batch in ((wb, True), (ws, False)):
                    try:
                        res.append(_apply(w, op, batch, all_events, t))
                    except Exception as exc:  # anything but a MonitorError is a finding
                        return Failure(i, f"crash:{'batch' if batch else 'single'}",
                                       [f"{type(exc).__name__}: {exc}"[:300]])
                if res[0] != res[1]:
                    return Failure(i, "result", [f"batch={res[0]!r} single={res[1]!r}"])
                msgs = _diff_dumps(_dump(wb.path), _dump(ws.path))
                if msgs:
                    return Failure(i, "diverge", msgs)
                if invariants:
                    now = T0 + timedelta(seconds=t)
                    for w, name in ((wb, "batch"), (ws, "single")):
                        bad = check_invariants(w.engine, w.path, now, rebound)
                        if bad:
                            return Failure(i, f"invariant:{name}", bad)
        finally:
            wb.engine.dispose()
            ws.engine.dispose()
    return None


def check_seed(seed: int, steps: int, template: Path) -> Failure | None:
    """Run the operation sequence of ``seed``; the first failure, or None."""
    return run(ops_for_seed(seed, steps), template)


def minimise(ops: list[Op], template: Path, sig: str) -> list[Op]:
    """Greedy delta debugging: drop operations, then events inside ingests, then batch
    cuts, while the sequence still fails with signature ``sig``."""

    def fails(cand: list[Op]) -> bool:
        f = run(cand, template)
        return f is not None and f.signature() == sig

    first = run(ops, template)
    if first is None:
        return ops
    cur = list(ops[: first.step + 1])
    changed = True
    while changed:
        changed = False
        for size in (8, 4, 2, 1):
            i = 0
            while i < len(cur):
                cand = cur[:i] + cur[i + size:]
                if cand and fails(cand):
                    cur = cand
                    changed = True
                else:
                    i += size
        for i in range(len(cur)):
            op = cur[i]
            if op["op"] != "ingest":
                continue
            j = 0
            while j < len(op["events"]) and len(op["events"]) > 1:
                evs = op["events"][:j] + op["events"][j + 1:]
                cuts = sorted({min(c, len(evs)) for c in op["cuts"]})
                cand = [*cur[:i], {**op, "events": evs, "cuts": cuts}, *cur[i + 1:]]
                if fails(cand):
                    cur, op, changed = cand, cand[i], True
                else:
                    j += 1
            for cut in list(op["cuts"]):
                cand = [*cur[:i], {**op, "cuts": [x for x in op["cuts"] if x != cut]},
                        *cur[i + 1:]]
                if fails(cand):
                    cur, op, changed = cand, cand[i], True
    return cur


@dataclass
class FastCount:
    """New events planned by the fast path, and how many of them it took."""

    events: int = 0
    fast: int = 0


@contextmanager
def count_fast_path() -> Iterator[FastCount]:
    """Count, while the block runs, the events the fast path takes (an observation
    only: FastPath.plan's result is returned unchanged, and restored on exit)."""
    count = FastCount()
    orig: Callable[..., FastPlan] = FastPath.plan

    def plan(self: FastPath, session: Any, events: Any, *a: Any, **kw: Any) -> FastPlan:
        p = orig(self, session, events, *a, **kw)
        count.events += len(events)
        count.fast += len(p.boots)
        return p

    FastPath.plan = plan  # type: ignore[method-assign]
    try:
        yield count
    finally:
        FastPath.plan = orig  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fuzz_monitor.py",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs=2, default=(0, 50), metavar=("FROM", "TO"),
                        help="seeds FROM..TO-1 (default 0 50)")
    parser.add_argument("--steps", type=int, default=80,
                        help="random steps per seed (default 80)")
    parser.add_argument("--minimise", action="store_true",
                        help="on a failure, also print the shortest failing sequence found")
    args = parser.parse_args(argv)
    lo, hi = args.seeds
    if hi <= lo or lo < 0 or args.steps < 1:
        parser.print_usage(sys.stderr)
        print("scripts/fuzz_monitor.py: need 0 <= FROM < TO and --steps >= 1",
              file=sys.stderr)
        return 2
    logging.disable(logging.CRITICAL)  # the monitor logs every alert and webhook
    start = time.monotonic()
    total_ops = 0
    with tempfile.TemporaryDirectory(prefix="bootwatch-fuzz-monitor-") as d, \
            count_fast_path() as fast:
        template = make_template(Path(d))
        for seed in range(lo, hi):
            before = (fast.events, fast.fast)
            ops = ops_for_seed(seed, args.steps)
            total_ops += len(ops)
            failure = run(ops, template)
            if failure is not None:
                print(f"seed {seed}: FAILED at step {failure.step} of {len(ops)} "
                      f"({failure.kind}): {json.dumps(ops[failure.step])}")
                for line in failure.detail[:8]:
                    print(f"    {line[:400]}")
                print(f"replay: scripts/fuzz_monitor.py --seeds {seed} {seed + 1} "
                      f"--steps {args.steps}")
                if args.minimise:
                    shortest = minimise(ops, template, failure.signature())
                    print(f"shortest failing sequence ({len(shortest)} operations):")
                    for op in shortest:
                        print(json.dumps(op))
                return 1
            print(f"seed {seed}: ok, {len(ops)} operations, "
                  f"{fast.fast - before[1]} of {fast.events - before[0]} new events "
                  "on the fast path (both databases)", flush=True)
    print(f"seeds {lo}..{hi - 1}: {total_ops} operations, all ok; fast path took "
          f"{fast.fast} of {fast.events} new events; {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
