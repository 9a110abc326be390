"""Monitor benchmark: ingestion rate against bare inserts, and fleet queries at scale.

    python benchmarks/monitor.py [--events 20000] [--runs 3] [--mix repeat=0.85,...]
                                 [--vms 10000,100000] [--corpus ../shared/corpus]

``--events 0`` (or ``--runs 0``) skips the ingestion runs, ``--reports 0`` the
reports, ``--vms ""`` the queries.

What it measures, all in one run on the same machine (figures are ratios to a
floor measured in the same run, so a loaded machine shows as a loaded floor):

1. **Outcome ingestion** on SQLite (WAL, synchronous=NORMAL, as bootwatch
   configures it): ``Monitor.ingest_outcomes`` in batches of 500 (what the
   in-process sink does) for events of 2,000 enabled VMs whose first boot (a
   real COS 101 boot: its quoted PCRs' 46 events, decoded as the service decodes
   them) is their baseline.  The measured events are drawn from ``--mix``: by
   default 85% repeated permits of the known boot (agents attest every few
   minutes), 12% reboots (a new boot of the same image: a new boot row), 2%
   policy denials (an alert opened, and resolved by the VM's next permit) and
   1% boots of a new image (a baseline-deviation alert with its event diff);
   ``--mix repeat=0.5,reboot=0.5`` is the mix of the figures before 2026-12-03.
   Reported for each of ``--runs`` runs (each on a new database), then the best
   and the spread: events/s, CPU per event, the cores other processes used
   meanwhile, and the ratio to the floor: bare ``executemany`` inserts of the
   same outcome rows and new boot rows (with their documents) into the same
   tables, no logic.
2. **Report ingestion**: platform-error reports (no token), one transaction each
   (``Monitor.ingest_report``), then grouped as the API stores them (its
   ``ReportWriter``, with 32 threads each sending one report at a time and waiting for
   the answer, as concurrent requests do).
3. **Queries** at each fleet size (VMs, recommendations and alerts seeded by
   bulk insert, documented below): ``GET /api/v1/vms`` first page, a page deep
   in the keyset pagination, a state filter, a name search, and ``GET
   /api/v1/alerts?status=open``, each over HTTP to the real app (uvicorn on
   loopback): p50 and p99 of 200 requests.

Targets (issue 11): ingest >= 5,000 events/s on SQLite on 2 cores and within
3x of the bare-insert floor; queries p99 < 50 ms at 100,000 VMs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def others_load(seconds: float = 1.0) -> float:
    """Cores used by other processes over a short window (from /proc/stat and our own CPU)."""
    def total() -> tuple[float, float]:
        with open("/proc/stat") as fh:
            parts = [float(x) for x in fh.readline().split()[1:]]
        return sum(parts), parts[3] + parts[4]

    t0, i0 = total()
    time.sleep(seconds)
    t1, i1 = total()
    busy = (t1 - t0) - (i1 - i0)
    ticks = os.sysconf("SC_CLK_TCK")
    return busy / ticks / seconds


def make_events(corpus: Path) -> tuple[dict[int, str], tuple[Any, ...]]:
    from bootwatch.attest.outcome import describe_events
    from bootwatch.eventlog.framing import parse_log

    log = parse_log((corpus / "eventlogs/go-tpm-tools/cos-101-amd-sev.bin").read_bytes())
    pcrs = frozenset(range(10))
    events = describe_events(log, pcrs)
    return {p: os.urandom(32).hex() for p in sorted(pcrs)}, events


def outcome(vm_id: str, pcrs: dict[int, str], events: Any, reset: int, when: datetime,
            verdict: str = "permit") -> Any:
    from bootwatch.protocol.outcome import OutcomeEvent, Verdict

    deny = verdict == "deny"
    return OutcomeEvent(
        event_id=uuid.uuid4().hex, time=when, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.DENY if deny else Verdict.PERMIT,
        reason="policy rule 3 denied: secureboot == false" if deny else "permitted",
        deciding_rule="rule 3" if deny else None, policy_hash="h" * 43, vm_id=vm_id,
        pcrs=pcrs, events=events, reset_count=reset, secure_boot=True,
        claims=(("secureboot", True), ("x-ms-azurevm-is-windows", False)),
    )


def other_image(pcrs: dict[int, str], events: Any) -> tuple[dict[int, str], Any]:
    """The same boot with a new bootloader: PCR 4's events and value change."""
    from bootwatch.protocol.outcome import BootEvent

    changed = tuple(BootEvent(e.index, e.pcr, e.type, os.urandom(32).hex(), e.component)
                    if e.pcr == 4 else e for e in events)
    return {**pcrs, 4: os.urandom(32).hex()}, changed


def build_monitor(path: Path, **kw: Any) -> Any:
    from bootwatch.monitor.container import bootstrap
    from bootwatch.monitor.settings import MonitorSettings

    return bootstrap(MonitorSettings(db_url=f"sqlite:///{path}", **kw))


#: what the measured events are, by default: mostly repeated attestations of a known
#: boot (agents attest every few minutes), some reboots (a new boot of the same image),
#: a few policy denials (an alert opened, then resolved by the next permit) and
#: deviations from the baseline (an alert with its event-level diff)
MIX = {"repeat": 0.85, "reboot": 0.12, "deny": 0.02, "deviate": 0.01}


def parse_mix(text: str) -> dict[str, float]:
    mix = {k: 0.0 for k in MIX}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in mix:
            raise SystemExit(f"--mix: unknown kind {key!r} (one of {', '.join(MIX)})")
        mix[key] = float(value)
    if abs(sum(mix.values()) - 1) > 1e-6:
        raise SystemExit("--mix: the shares must add up to 1")
    return mix


def busy_ticks() -> float:
    with open("/proc/stat") as fh:
        parts = [float(x) for x in fh.readline().split()[1:]]
    return sum(parts) - parts[3] - parts[4]


def bench_ingest(corpus: Path, n_events: int, work: Path, mix: dict[str, float],
                 seed: int, timers: PhaseTimers | None = None) -> dict[str, Any]:
    from sqlalchemy import insert

    from bootwatch.monitor.core import _events_json, _pcrs_json
    from bootwatch.monitor.db import make_engine, run_migrations
    from bootwatch.monitor.models import BootDocumentRow, BootRow, OutcomeRow
    from bootwatch.service.collector import settle_collector

    rnd = random.Random(seed)
    pcrs, events = make_events(corpus)
    n_vms = 2000
    c = build_monitor(work / "ingest.db", stale_after_seconds=3600)
    vm_ids = [str(uuid.UUID(int=i + 1)).upper() for i in range(n_vms)]
    for vm in vm_ids:
        c.monitor.enable(vm, name=f"vm-{vm[-6:]}")
    now = datetime.now(UTC)
    # warm: every VM's first boot (learns its baseline)
    batch = [outcome(vm, pcrs, events, 1, now + timedelta(microseconds=i))
             for i, vm in enumerate(vm_ids)]
    for k in range(0, len(batch), 500):
        c.monitor.ingest_outcomes(batch[k:k + 500])
    # measured: consecutive rounds over the fleet, each VM once per round (so a batch
    # of 500 holds 500 VMs), each event drawn from the mix
    kinds = list(mix)
    weights = [mix[k] for k in kinds]
    resets = dict.fromkeys(vm_ids, 1)
    todo, new_boots = [], []
    counts = dict.fromkeys(kinds, 0)
    for i in range(n_events):
        vm = vm_ids[i % n_vms]
        kind = rnd.choices(kinds, weights)[0]
        counts[kind] += 1
        when = now + timedelta(seconds=1 + i // n_vms, microseconds=i % n_vms)
        if kind == "reboot":
            resets[vm] += 1
            todo.append(outcome(vm, pcrs, events, resets[vm], when))
            new_boots.append(todo[-1])
        elif kind == "deviate":
            resets[vm] += 1
            p2, e2 = other_image(pcrs, events)
            todo.append(outcome(vm, p2, e2, resets[vm], when))
            new_boots.append(todo[-1])
        else:
            todo.append(outcome(vm, pcrs, events, resets[vm], when,
                                "deny" if kind == "deny" else "permit"))
    # as `bootwatch server` and `bootwatch monitor run` do once started (the floor below
    # runs under the same settings)
    settled = settle_collector()
    busy0 = busy_ticks()
    c0, t0 = cpu(), time.perf_counter()
    if timers is not None:
        timers.timing = True
    for k in range(0, len(todo), 500):
        c.monitor.ingest_outcomes(todo[k:k + 500])
    wall = time.perf_counter() - t0
    if timers is not None:
        timers.timing = False
    used = cpu() - c0
    others = ((busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK") - used) / wall
    c.stop()

    # the floor: the same outcome rows and new boot rows, bare executemany, one
    # commit per 500 events, into the same (migrated, empty) tables
    engine = make_engine(f"sqlite:///{work / 'floor.db'}")
    run_migrations(engine)
    ev_json = _events_json(events)
    pj = _pcrs_json(pcrs)
    rows_o = [{"event_id": o.event_id, "vm_id": o.vm_id, "time": o.time, "received_at": now,
               "provider": "shared", "verdict": o.verdict.value, "reason": o.reason,
               "failed_check": None, "boot_id": None} for o in todo]
    fresh = {id(o) for o in new_boots}
    rows_b = [{"id": i + 1, "vm_id": o.vm_id, "boot_key": uuid.uuid4().hex,
               "reset_count": o.reset_count, "pcr_bank": "sha256", "pcrs": pj,
               "verdict": "permit", "reason": "permitted", "policy_hash": "h",
               "baseline_id": None, "agent_version": "", "first_seen": now, "last_seen": now}
              if id(o) in fresh else None for i, o in enumerate(todo)]
    f0 = time.perf_counter()
    for k in range(0, len(rows_o), 500):
        with engine.begin() as conn:
            conn.execute(insert(OutcomeRow.__table__), rows_o[k:k + 500])
            part = [r for r in rows_b[k:k + 500] if r is not None]
            if part:
                conn.execute(insert(BootRow.__table__), part)
                conn.execute(insert(BootDocumentRow.__table__),
                             [{"boot_id": r["id"], "events": ev_json, "claims": "[]"}
                              for r in part])
    floor = time.perf_counter() - f0
    settled.release()
    engine.dispose()
    return {"events": n_events, **{f"n_{k}": v for k, v in counts.items()},
            "wall_s": wall, "events_per_s": n_events / wall,
            "cpu_us_per_event": used / n_events * 1e6, "others_cores_busy": others,
            "floor_events_per_s": n_events / floor, "ratio_to_floor": wall / floor}


class PhaseTimers:
    """``--phases``: wall time per ingestion phase, from timers wrapped around the
    monitor's own methods for one run (the benchmark's instrument, not the product's).

    With ``skip_updates`` the fast path's UPDATE statements (the VMs' and boots'
    last-seen columns, one of each per event) are not run: what ingestion would cost if
    the data model did not update those rows per event (derived from the outcomes
    instead).  The rows it stores are then wrong; the run only measures."""

    def __init__(self, *, skip_updates: bool = False) -> None:
        from collections import Counter

        self.totals: Counter[str] = Counter()
        self.skip_updates = skip_updates
        self._undo: list[tuple[Any, str, Any]] = []
        self.timing = False

    def _wrap(self, owner: Any, name: str, label: str) -> None:
        orig = getattr(owner, name)

        def timed(*a: Any, **k: Any) -> Any:
            if not self.timing:
                return orig(*a, **k)
            t = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                self.totals[label] += time.perf_counter() - t

        self._undo.append((owner, name, orig))
        setattr(owner, name, timed)

    def __enter__(self) -> PhaseTimers:
        from sqlalchemy.orm import Session

        from bootwatch.monitor.core import Monitor
        from bootwatch.monitor.fastpath import FastPath
        from bootwatch.monitor.rawsql import RawWrite
        from bootwatch.monitor.records import RowSet

        self._wrap(Monitor, "ingest_outcomes", "whole batch")
        self._wrap(FastPath, "plan", "fast path: planning (reads, matching, state)")
        self._wrap(FastPath, "write", "fast path: writing (statements run)")
        self._wrap(Session, "commit", "commit")
        self._wrap(Monitor, "_preload", "general path: loading")
        self._wrap(Monitor, "_apply_outcome", "general path: applying")
        self._wrap(RowSet, "flush", "general path: writing")
        if self.skip_updates:
            orig = RawWrite.executemany

            def no_updates(raw: Any, session: Any, rows: Any, memo: Any = None) -> None:
                if not raw.sql.lstrip().upper().startswith("UPDATE"):
                    orig(raw, session, rows, memo)

            self._undo.append((RawWrite, "executemany", orig))
            RawWrite.executemany = no_updates  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, orig in reversed(self._undo):
            setattr(owner, name, orig)


def _send_reports(monitor: Any, writer: Any, reports: list[Any]) -> None:
    """One sender: a report at a time, each answered before the next (as an agent)."""
    for r in reports:
        writer.submit(monitor.check_report(r)).result(timeout=60)


def bench_reports(work: Path, n: int, agents: int = 32) -> dict[str, float]:
    """Platform-error reports (no token) of 500 enabled VMs: one transaction each
    (``Monitor.ingest_report``), then through the API's group commit
    (``ReportWriter``) with ``agents`` threads each submitting one report at a time
    and waiting for its answer, as concurrent HTTP requests do."""
    import threading

    from bootwatch.monitor.reports import ReportWriter
    from bootwatch.protocol.health import FailedHop, HealthReport, HealthStatus

    out: dict[str, float] = {"reports": n, "agents": agents}
    for mode in ("single", "grouped"):
        c = build_monitor(work / f"reports-{mode}.db")
        vm_ids = [str(uuid.UUID(int=i + 1)).upper() for i in range(500)]
        for vm in vm_ids:
            c.monitor.enable(vm)
        now = datetime.now(UTC)
        reports = [HealthReport(uuid.uuid4().hex, vm_ids[i % 500], HealthStatus.PLATFORM_ERROR,
                                now, "1.0", platform_error_message="TLS handshake failed",
                                failed_hop=FailedHop.TLS, failed_target="https://x:443")
                   for i in range(n)]
        writer = ReportWriter(c.monitor)
        c0, t0 = cpu(), time.perf_counter()
        if mode == "single":
            for r in reports:
                c.monitor.ingest_report(r)
        else:
            threads = [threading.Thread(target=_send_reports,
                                        args=(c.monitor, writer, reports[k::agents]))
                       for k in range(agents)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        wall = time.perf_counter() - t0
        used = cpu() - c0
        writer.stop()
        c.stop()
        out[f"{mode}_reports_per_s"] = n / wall
        out[f"{mode}_cpu_us_per_report"] = used / n * 1e6
        if mode == "grouped":
            out["grouped_mean_batch"] = writer.stored / max(1, writer.batches)
    return out


def seed_fleet(path: Path, n: int) -> None:
    """Bulk-insert ``n`` VMs (states spread as a fleet's would be), their seven
    recommendations, and an open alert for each unhealthy one."""
    from sqlalchemy import insert

    from bootwatch.monitor.db import make_engine, run_migrations
    from bootwatch.monitor.health import ATTENTION
    from bootwatch.monitor.models import AlertRow, RecommendationRow, VmRow
    from bootwatch.monitor.recommendations import CATALOGUE
    from bootwatch.protocol.monitor import VmState

    engine = make_engine(f"sqlite:///{path}")
    run_migrations(engine)
    rnd = random.Random(7)
    now = datetime.now(UTC)
    weights = [(VmState.HEALTHY, 90), (VmState.UNHEALTHY, 3), (VmState.STALE, 3),
               (VmState.PLATFORM_ERROR, 2), (VmState.NOT_REPORTING, 1), (VmState.NOT_MONITORED, 1)]
    states = [s for s, w in weights for _ in range(w)]
    vms, recs, alerts = [], [], []
    for i in range(n):
        st = rnd.choice(states)
        vm_id = str(uuid.UUID(int=rnd.getrandbits(128))).upper()
        vms.append({"vm_id": vm_id, "name": f"vm-{i:06d}", "group_name": f"g{i % 50}",
                    "provider": "shared", "security_type": "trusted-launch", "secure_boot": "on",
                    "vtpm": "on", "enabled": st is not VmState.NOT_MONITORED, "state": st.value,
                    "attention": ATTENTION[st], "state_reason": "seeded", "state_since": now,
                    "created_at": now, "last_reason": "", "last_report_verified": False,
                    "last_report_message": "", "last_failed_target": "", "agent_version": "1.0",
                    "open_alerts": 1 if st is VmState.UNHEALTHY else 0})
        for d in CATALOGUE[:7]:
            recs.append({"vm_id": vm_id, "key": d.key, "name": d.name,
                         "severity": d.severity.value,
                         "code": "Unhealthy" if st is VmState.UNHEALTHY and d.key.startswith("b7")
                         else "Healthy", "cause": "", "description": "seeded",
                         "remediation": "", "first_evaluated": now, "status_changed": now})
        if st is VmState.UNHEALTHY:
            alerts.append({"id": uuid.uuid4().hex, "vm_id": vm_id,
                           "alert_type": "BOOTWATCH_VM_AttestationFailed",
                           "reason": "baseline_deviation", "severity": "medium",
                           "status": "active", "correlation_key": f"{vm_id}:baseline_deviation",
                           "count": 1, "title": "t", "description": "d", "remediation": "[]",
                           "extended": "{}", "diff": "[]", "boot_id": None, "start_time": now,
                           "last_seen": now, "end_time": None, "status_changed_by": ""})
    with engine.begin() as conn:
        for table, rows in ((VmRow, vms), (RecommendationRow, recs), (AlertRow, alerts)):
            for k in range(0, len(rows), 5000):
                conn.execute(insert(table.__table__), rows[k:k + 5000])
    engine.dispose()


def bench_queries(work: Path, n: int, rounds: int) -> dict[str, dict[str, float]]:
    import httpx

    sys.path.insert(0, str(REPO / "tests" / "support"))
    from bwservers import ThreadServer, bound_socket

    from bootwatch.monitor.app import create_monitor_app

    path = work / f"fleet-{n}.db"
    seed_fleet(path, n)
    c = build_monitor(path, admin_tokens=("bench",))
    sock = bound_socket()
    server = ThreadServer(create_monitor_app(c), sock).start()
    out: dict[str, dict[str, float]] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            deep = client.get("/api/v1/vms", params={"limit": 100}).json()
            for _ in range(20):
                deep = client.get("/api/v1/vms", params={"limit": 100,
                                                         "cursor": deep["next_cursor"]}).json()
            queries = {
                "vms first page": ("/api/v1/vms", {"limit": 100}),
                "vms page 21 (keyset)": ("/api/v1/vms", {"limit": 100,
                                                         "cursor": deep["next_cursor"]}),
                "vms state=stale": ("/api/v1/vms", {"limit": 100, "state": "stale"}),
                "vms name search": ("/api/v1/vms", {"limit": 100, "q": "vm-0421"}),
                "open alerts": ("/api/v1/alerts", {"limit": 100, "status": "open"}),
                "summary": ("/api/v1/summary", {}),
            }
            for label, (url, params) in queries.items():
                times = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    r = client.get(url, params=params)
                    times.append((time.perf_counter() - t0) * 1000)
                    if r.status_code != 200:
                        raise SystemExit(f"{label}: HTTP {r.status_code} {r.text[:200]}")
                times.sort()
                out[label] = {"p50_ms": statistics.median(times),
                              "p99_ms": times[int(len(times) * 0.99) - 1]}
    finally:
        server.stop()
        c.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--reports", type=int, default=3000)
    ap.add_argument("--vms", default="10000,100000", help="fleet sizes for the query "
                    "benchmark, comma-separated (empty: no query benchmark)")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--mix", default=",".join(f"{k}={v}" for k, v in MIX.items()),
                    help="shares of the measured events: repeat (a known boot again), "
                    "reboot (a new boot of the same image), deny, deviate (a new image)")
    ap.add_argument("--runs", type=int, default=3,
                    help="ingestion runs (each on a new database); best and spread printed")
    ap.add_argument("--phases", action="store_true",
                    help="after the runs, two more: one with timers around each phase of "
                    "ingestion, one without the fast path's per-event UPDATEs of the VMs' "
                    "and boots' rows (what dropping them from the data model would gain)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from bootwatch.cli.demo import find_corpus

    corpus = find_corpus(Path(args.corpus) if args.corpus else None)
    load = others_load()
    result: dict[str, Any] = {"cores": os.cpu_count(), "others_cores_busy_before": round(load, 2)}
    with tempfile.TemporaryDirectory(prefix="bw-bench-monitor-") as tmp:
        work = Path(tmp)
        mix = parse_mix(args.mix)
        result["mix"] = mix
        result["ingest_runs"] = [bench_ingest(corpus, args.events, work / f"run{r}", mix, r)
                                 for r in range(args.runs if args.events else 0)]
        if result["ingest_runs"]:
            result["ingest"] = max(result["ingest_runs"], key=lambda x: x["events_per_s"])
        if args.phases and args.events:
            for skip in (False, True):
                with PhaseTimers(skip_updates=skip) as timers:
                    run = bench_ingest(corpus, args.events, work / f"phases{int(skip)}", mix,
                                       0, timers)
                run["phases_us_per_event"] = {k: v / args.events * 1e6
                                              for k, v in timers.totals.items()}
                result["phases_without_updates" if skip else "phases"] = run
        if args.reports:
            result["reports"] = bench_reports(work, args.reports)
        result["queries"] = {n: bench_queries(work, int(n), args.rounds)
                             for n in args.vms.split(",") if n}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['cores']} cores; other processes used {load:.2f} cores before "
          "the run")
    if result["ingest_runs"]:
        print_ingest(result)
    if "phases" in result:
        print_phases(result)
    if "reports" in result:
        rep = result["reports"]
        print(f"report ingestion, one transaction each: {rep['single_reports_per_s']:,.0f} "
              f"reports/s, {rep['single_cpu_us_per_report']:.0f} us CPU per report; "
              f"grouped as the API does ({rep['agents']:.0f} concurrent senders, mean batch "
              f"{rep['grouped_mean_batch']:.1f}): {rep['grouped_reports_per_s']:,.0f} reports/s, "
              f"{rep['grouped_cpu_us_per_report']:.0f} us CPU per report")
    for n, qs in result["queries"].items():
        for label, f in qs.items():
            print(f"{int(n):>7,} VMs  {label:<22} p50 {f['p50_ms']:6.1f} ms  "
                  f"p99 {f['p99_ms']:6.1f} ms  (target p99 < 50 ms)")


def print_ingest(result: dict[str, Any]) -> None:
    ing = result["ingest"]
    runs = result["ingest_runs"]
    print(f"outcome ingestion (SQLite, batches of 500, 2,000 VMs, {ing['events']:,} events: "
          + ", ".join(f"{k} {ing['n_' + k]:,}" for k in result["mix"]) + ")")
    for i, r in enumerate(runs):
        print(f"  run {i + 1}: {r['events_per_s']:,.0f} events/s, {r['cpu_us_per_event']:.0f} us "
              f"CPU per event; bare inserts of the same rows {r['floor_events_per_s']:,.0f}/s "
              f"-> {r['ratio_to_floor']:.2f}x the floor; other processes used "
              f"{r['others_cores_busy']:.2f} cores meanwhile")
    rates = [r["events_per_s"] for r in runs]
    print(f"  best {ing['events_per_s']:,.0f} events/s ({ing['ratio_to_floor']:.2f}x the floor), "
          f"spread {min(rates):,.0f}-{max(rates):,.0f}/s over {len(runs)} runs "
          "(target >= 5,000/s and <= 3x)")


def print_phases(result: dict[str, Any]) -> None:
    run, bare = result["phases"], result["phases_without_updates"]
    floor = 1e6 / run["floor_events_per_s"]
    print(f"where an event's time goes (wall, per event, one run with timers; the floor of "
          f"that run {floor:.1f} us, so 3x is {3 * floor:.1f} us):")
    phases = dict(run["phases_us_per_event"])
    whole = phases["whole batch"]
    phases["the rest (duplicate check, boot keys, ids, metrics)"] = whole - sum(
        us for label, us in phases.items() if label != "whole batch")
    for label, us in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<52} {us:7.1f} us  ({us / floor:.2f}x the floor)")
    print(f"  without the fast path's UPDATEs of the VMs' and boots' rows (rows left wrong, "
          f"measured only): {bare['ratio_to_floor']:.2f}x the floor against "
          f"{run['ratio_to_floor']:.2f}x with them")


if __name__ == "__main__":
    main()
