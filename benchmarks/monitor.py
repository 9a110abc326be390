"""Monitor benchmark: ingestion rate against bare inserts, and fleet queries at scale.

    python benchmarks/monitor.py [--events 20000] [--vms 10000,100000] [--corpus ../shared/corpus]

What it measures, all in one run on the same machine (figures are ratios to a
floor measured in the same run, so a loaded machine shows as a loaded floor):

1. **Outcome ingestion** on SQLite (WAL, synchronous=NORMAL, as bootwatch
   configures it): ``Monitor.ingest_outcomes`` in batches of 500 (what the
   in-process sink does) for events of 2,000 enabled VMs, each a permitted
   attestation of a real COS 101 boot (its quoted PCRs' 48 events, decoded as
   the service decodes them), half of them repeats of a boot already seen.
   Reported: events/s, CPU per event, and the ratio to the floor: bare
   ``executemany`` inserts of the same outcome and boot rows into the same
   tables, no logic.
2. **Report ingestion**: ``Monitor.ingest_report`` for platform-error reports
   (no token), one transaction each (as the API does).
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


def outcome(vm_id: str, pcrs: dict[int, str], events: Any, reset: int, when: datetime) -> Any:
    from bootwatch.protocol.outcome import OutcomeEvent, Verdict

    return OutcomeEvent(
        event_id=uuid.uuid4().hex, time=when, provider="shared", attestation_type="AzureGuest",
        verdict=Verdict.PERMIT, reason="permitted", policy_hash="h" * 43, vm_id=vm_id,
        pcrs=pcrs, events=events, reset_count=reset, secure_boot=True,
        claims=(("secureboot", True), ("x-ms-azurevm-is-windows", False)),
    )


def build_monitor(path: Path, **kw: Any) -> Any:
    from bootwatch.monitor.container import bootstrap
    from bootwatch.monitor.settings import MonitorSettings

    return bootstrap(MonitorSettings(db_url=f"sqlite:///{path}", **kw))


def bench_ingest(corpus: Path, n_events: int, work: Path) -> dict[str, float]:
    from sqlalchemy import insert

    from bootwatch.monitor.core import _events_json, _pcrs_json
    from bootwatch.monitor.models import BootRow, OutcomeRow

    pcrs, events = make_events(corpus)
    n_vms = 2000
    c = build_monitor(work / "ingest.db", stale_after_seconds=3600)
    vm_ids = [str(uuid.UUID(int=i + 1)).upper() for i in range(n_vms)]
    for vm in vm_ids:
        c.monitor.enable(vm, name=f"vm-{vm[-6:]}")
    now = datetime.now(UTC)
    batch: list[Any] = []
    # warm: every VM's first boot (learns its baseline)
    for i, vm in enumerate(vm_ids):
        batch.append(outcome(vm, pcrs, events, 1, now + timedelta(microseconds=i)))
    for k in range(0, len(batch), 500):
        c.monitor.ingest_outcomes(batch[k:k + 500])
    # measured: half repeats of the known boot, half new boots (a reboot, same image)
    todo = [outcome(vm_ids[i % n_vms], pcrs, events, 1 + (i % 2) * (2 + i // n_vms),
                    now + timedelta(seconds=1, microseconds=i)) for i in range(n_events)]
    c0, t0 = cpu(), time.perf_counter()
    for k in range(0, len(todo), 500):
        c.monitor.ingest_outcomes(todo[k:k + 500])
    wall = time.perf_counter() - t0
    used = cpu() - c0
    c.stop()

    # the floor: the same outcome and boot rows, bare executemany, one commit per 500
    from bootwatch.monitor.db import make_engine, run_migrations

    engine = make_engine(f"sqlite:///{work / 'floor.db'}")
    run_migrations(engine)
    ev_json = _events_json(events)
    pj = _pcrs_json(pcrs)
    rows_o = [{"event_id": o.event_id, "vm_id": o.vm_id, "time": o.time, "received_at": now,
               "provider": "shared", "verdict": "permit", "reason": "permitted",
               "failed_check": None, "boot_id": None} for o in todo]
    rows_b = [{"vm_id": o.vm_id, "boot_key": uuid.uuid4().hex, "reset_count": o.reset_count,
               "pcr_bank": "sha256", "pcrs": pj, "events": ev_json, "claims": "[]",
               "verdict": "permit", "reason": "permitted", "policy_hash": "h",
               "baseline_id": None, "agent_version": "", "first_seen": now, "last_seen": now}
              for o in todo[::2]]
    f0 = time.perf_counter()
    with engine.begin() as conn:
        pass
    for k in range(0, len(rows_o), 500):
        with engine.begin() as conn:
            conn.execute(insert(OutcomeRow.__table__), rows_o[k:k + 500])
            part = rows_b[k // 2:(k + 500) // 2]
            if part:
                conn.execute(insert(BootRow.__table__), part)
    floor = time.perf_counter() - f0
    engine.dispose()
    return {"events": n_events, "wall_s": wall, "events_per_s": n_events / wall,
            "cpu_us_per_event": used / n_events * 1e6, "floor_events_per_s": n_events / floor,
            "ratio_to_floor": wall / floor}


def bench_reports(work: Path, n: int) -> dict[str, float]:
    from bootwatch.protocol.health import FailedHop, HealthReport, HealthStatus

    c = build_monitor(work / "reports.db")
    vm_ids = [str(uuid.UUID(int=i + 1)).upper() for i in range(500)]
    for vm in vm_ids:
        c.monitor.enable(vm)
    now = datetime.now(UTC)
    reports = [HealthReport(uuid.uuid4().hex, vm_ids[i % 500], HealthStatus.PLATFORM_ERROR,
                            now, "1.0", platform_error_message="TLS handshake failed",
                            failed_hop=FailedHop.TLS, failed_target="https://x:443")
               for i in range(n)]
    c0, t0 = cpu(), time.perf_counter()
    for r in reports:
        c.monitor.ingest_report(r)
    wall = time.perf_counter() - t0
    used = cpu() - c0
    c.stop()
    return {"reports": n, "reports_per_s": n / wall, "cpu_us_per_report": used / n * 1e6}


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
    ap.add_argument("--vms", default="10000,100000")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from bootwatch.cli.demo import find_corpus

    corpus = find_corpus(Path(args.corpus) if args.corpus else None)
    load = others_load()
    result: dict[str, Any] = {"cores": os.cpu_count(), "others_cores_busy_before": round(load, 2)}
    with tempfile.TemporaryDirectory(prefix="bw-bench-monitor-") as tmp:
        work = Path(tmp)
        result["ingest"] = bench_ingest(corpus, args.events, work)
        result["reports"] = bench_reports(work, args.reports)
        result["queries"] = {n: bench_queries(work, int(n), args.rounds)
                             for n in args.vms.split(",")}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    ing = result["ingest"]
    print(f"machine: {result['cores']} cores; other processes used {load:.2f} cores before "
          "the run")
    print(f"outcome ingestion (SQLite, batches of 500): {ing['events_per_s']:,.0f} events/s, "
          f"{ing['cpu_us_per_event']:.0f} us CPU per event; bare inserts of the same rows "
          f"{ing['floor_events_per_s']:,.0f}/s -> {ing['ratio_to_floor']:.2f}x the floor "
          "(target >= 5,000/s and <= 3x)")
    rep = result["reports"]
    print(f"report ingestion (one transaction each): {rep['reports_per_s']:,.0f} reports/s, "
          f"{rep['cpu_us_per_report']:.0f} us CPU per report")
    for n, qs in result["queries"].items():
        for label, f in qs.items():
            print(f"{int(n):>7,} VMs  {label:<22} p50 {f['p50_ms']:6.1f} ms  "
                  f"p99 {f['p99_ms']:6.1f} ms  (target p99 < 50 ms)")


if __name__ == "__main__":
    main()
