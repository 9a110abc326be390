"""Outcome events through NATS JetStream into the monitor: events/s, beside the in-process rate.

    python benchmarks/ingest_nats.py [--events 10000] [--db sqlite,postgres] [--mix fleet|half]
        [--concurrent]
        [--nats nats://127.0.0.1:4222] [--corpus ../shared/corpus]

For each database (SQLite in a temporary directory; PostgreSQL at
127.0.0.1:5432 db ``test``, a fresh schema per run), all in one run so the
figures share the machine's load:

1. **in-process**: ``Monitor.ingest_outcomes`` in batches of 500 (what the
   embedded server's sink and each JetStream batch do), the floor of this
   benchmark: JetStream can add to it, not remove from it;
2. **JetStream, 1 and 2 ingester processes**: the ingesters (each a process of
   its own with its own monitor on the same database) are started; then this
   process publishes the events with :class:`JetStreamSink` (batches of 500,
   every publish acknowledged: the service's side, timed on its own); then the
   ingesters bind to one durable consumer and drain the stream.  Reported: the
   publish rate, the ingestion rate (the ingesters told to start, to the last
   event committed in the monitor), its ratio to the in-process rate, and how
   the work split between the ingesters.  ``--concurrent`` publishes while the
   ingesters run instead (the end-to-end rate, bounded by publishing).

Events: 2,000 enabled VMs whose first boot is ingested before the clock starts;
then (``--mix half``, the default before 2026-12-03) half repeats of a known boot,
half new boots, or (``--mix fleet``) ``benchmarks/monitor.py``'s fleet mix of 85%
repeats and 15% new boots, each a permitted attestation
of a real COS 101 boot with its quoted PCRs' 48 decoded events (about 6 KB of
JSON), as ``benchmarks/monitor.py`` does.  Target (issue 15): >= 5,000 events/s
through JetStream on this 2-core machine.  Every run makes its own stream and
consumer and deletes them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
N_VMS = 2000
BATCH = 500


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def vm_ids() -> list[str]:
    return [str(uuid.UUID(int=i + 1)).upper() for i in range(N_VMS)]


def make_events(corpus: Path, n: int, mix: str = "half") -> tuple[list[Any], list[Any]]:
    """(warm-up first boots, measured events) with fresh ids."""
    from bootwatch.attest.outcome import describe_events
    from bootwatch.eventlog.framing import parse_log
    from bootwatch.protocol.outcome import OutcomeEvent, Verdict

    log = parse_log((corpus / "eventlogs/go-tpm-tools/cos-101-amd-sev.bin").read_bytes())
    described = describe_events(log, frozenset(range(10)))
    pcrs = {p: os.urandom(32).hex() for p in range(10)}
    now = datetime.now(UTC)

    def outcome(vm: str, reset: int, when: datetime) -> Any:
        return OutcomeEvent(
            event_id=uuid.uuid4().hex, time=when, provider="shared",
            attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="permitted",
            policy_hash="h" * 43, vm_id=vm, pcrs=pcrs, events=described, reset_count=reset,
            secure_boot=True, claims=(("secureboot", True), ("x-ms-azurevm-is-windows", False)))

    vms = vm_ids()
    warm = [outcome(vm, 1, now + timedelta(microseconds=i)) for i, vm in enumerate(vms)]
    def reboot(i: int) -> bool:
        return i % 2 == 1 if mix == "half" else i % 20 in (3, 9, 16)

    todo = [outcome(vms[i % N_VMS], 1 + reboot(i) * (2 + i // N_VMS),
                    now + timedelta(seconds=1, microseconds=i)) for i in range(n)]
    return warm, todo


def open_monitor(db_url: str, schema: str, data_dir: Path) -> Any:
    from bootwatch.monitor.container import bootstrap
    from bootwatch.monitor.settings import MonitorSettings

    return bootstrap(MonitorSettings(data_dir=data_dir, db_url=db_url, db_schema=schema,
                                     stale_after_seconds=3600))


def fresh_db(kind: str, work: Path, label: str) -> tuple[str, str]:
    if kind == "sqlite":
        return f"sqlite:///{work / (label + '.db')}", ""
    from sqlalchemy import text

    from bootwatch.service.db import make_engine

    schema = f"bwbench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    admin.dispose()
    return PG_URL, schema


def drop_db(kind: str, schema: str) -> None:
    if kind != "postgres":
        return
    from sqlalchemy import text

    from bootwatch.service.db import make_engine

    admin = make_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def warm_up(c: Any, warm: list[Any]) -> None:
    for vm in vm_ids():
        c.monitor.enable(vm, name=f"vm-{vm[-6:]}")
    for k in range(0, len(warm), BATCH):
        c.monitor.ingest_outcomes(warm[k:k + BATCH])


def count_outcomes(c: Any) -> int:
    from sqlalchemy import func, select

    from bootwatch.monitor.models import OutcomeRow

    with c.monitor.read() as s:
        return int(s.scalar(select(func.count()).select_from(OutcomeRow)) or 0)


def bench_inprocess(kind: str, work: Path, warm: list[Any], todo: list[Any]) -> dict[str, float]:
    from bootwatch.service.collector import settle_collector

    db_url, schema = fresh_db(kind, work, "inproc")
    try:
        c = open_monitor(db_url, schema, work)
        warm_up(c, warm)
        settled = settle_collector()  # as the embedded server does once started
        c0, t0 = cpu(), time.perf_counter()
        for k in range(0, len(todo), BATCH):
            c.monitor.ingest_outcomes(todo[k:k + BATCH])
        wall = time.perf_counter() - t0
        used = cpu() - c0
        settled.release()
        c.engine.dispose()
    finally:
        drop_db(kind, schema)
    return {"events_per_s": len(todo) / wall, "cpu_us_per_event": used / len(todo) * 1e6}


def child(args: argparse.Namespace) -> None:
    """One ingester process: bind, say ready, ingest until told to stop, report."""
    from bootwatch.monitor.nats_ingest import JetStreamIngester
    from bootwatch.service.collector import settle_collector

    c = open_monitor(args.db_url, args.schema, Path(args.data_dir))
    ing = JetStreamIngester(c.monitor, args.nats, stream=args.stream, subject=args.subject,
                            durable=args.durable, batch=BATCH)
    if args.concurrent:
        ing.start()
    # as `bootwatch monitor run` does once started (service/collector.py)
    settle_collector()
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    c0 = cpu()
    if not args.concurrent:
        ing.start()
    sys.stdin.readline()  # "stop"
    used = cpu() - c0
    ing.stop()
    c.engine.dispose()
    print(json.dumps({"stored": ing.counts.stored, "duplicates": ing.counts.duplicates,
                      "cpu_s": used}), flush=True)


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def bench_jetstream(kind: str, work: Path, warm: list[Any], todo: list[Any], nats_url: str,
                    n_ingesters: int, concurrent: bool) -> dict[str, Any]:
    from bootwatch.service.events_nats import JetStreamSink

    tag = uuid.uuid4().hex[:10]
    stream, subject, durable = f"BWBENCH_{tag}", f"bwbench.{tag}.outcomes", f"bwbench-{tag}"
    db_url, schema = fresh_db(kind, work, f"js{n_ingesters}")
    procs: list[subprocess.Popen[str]] = []
    sink = JetStreamSink(nats_url, stream=stream, subject=subject, timeout=30.0)
    try:
        c = open_monitor(db_url, schema, work)
        warm_up(c, warm)
        base = count_outcomes(c)
        for _ in range(n_ingesters):
            p = subprocess.Popen(
                [sys.executable, __file__, "--child", "--db-url", db_url, "--schema", schema,
                 "--data-dir", str(work), "--nats", nats_url, "--stream", stream, "--subject",
                 subject, "--durable", durable] + (["--concurrent"] if concurrent else []),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
            procs.append(p)
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        sink.deliver(todo[:1])  # the stream exists; the first publish is not timed

        def go() -> None:
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()

        if concurrent:
            go()
        rest = todo[1:]
        t0 = time.perf_counter()
        for k in range(0, len(rest), BATCH):
            sink.deliver(rest[k:k + BATCH])
        t_pub = time.perf_counter() - t0
        if not concurrent:
            go()
            t0 = time.perf_counter()
        want = base + len(todo)
        deadline = time.monotonic() + 600
        while count_outcomes(c) < want:
            if time.monotonic() > deadline:
                raise SystemExit(f"JetStream ingestion stalled at {count_outcomes(c) - base}")
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        reports = []
        for p in procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("stop\n")
            p.stdin.flush()
            reports.append(json.loads(p.stdout.readline()))
            p.wait(timeout=60)
        c.engine.dispose()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sink.close()
        asyncio.run(_delete_stream(nats_url, stream))
        drop_db(kind, schema)
    return {"publish_per_s": len(rest) / t_pub, "events_per_s": len(rest) / wall,
            "split": [r["stored"] for r in reports],
            "duplicates": sum(r["duplicates"] for r in reports),
            "ingester_cpu_us_per_event": sum(r["cpu_s"] for r in reports) / len(rest) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--db", default="sqlite,postgres")
    ap.add_argument("--nats", default="nats://127.0.0.1:4222")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    ap.add_argument("--mix", choices=("half", "fleet"), default="fleet",
                    help="half: half repeats, half new boots; fleet: 85%% repeats")
    ap.add_argument("--concurrent", action="store_true",
                    help="publish while the ingesters run (end to end, bounded by publishing)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--db-url", "--schema", "--data-dir", "--stream", "--subject", "--durable"):
        ap.add_argument(name, default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.child:
        child(args)
        return
    warm, todo = make_events(args.corpus, args.events, args.mix)
    load0 = os.getloadavg()[0]
    print(f"{args.events} events (~{len(json.dumps(_as_json(todo[0])))} bytes of JSON each), "
          f"{N_VMS} VMs, mix {args.mix}; "
          + ("published while the ingesters run" if args.concurrent else
             "published first, then drained by the ingesters")
          + "; target >= 5,000 events/s through JetStream")
    print(f"{'database':9} {'path':22} {'events/s':>9} {'x in-process':>12} "
          f"{'publish/s':>10} {'split':>14}")
    for kind in [k.strip() for k in args.db.split(",") if k.strip()]:
        with tempfile.TemporaryDirectory(prefix="bw-nats-bench-") as tmp:
            work = Path(tmp)
            base = bench_inprocess(kind, work, warm, todo)
            print(f"{kind:9} {'in-process':22} {base['events_per_s']:9.0f} {1.0:12.2f} "
                  f"{'':>10} {'':>14}   ({base['cpu_us_per_event']:.0f} us CPU/event)",
                  flush=True)
            for n in (1, 2):
                r = bench_jetstream(kind, work, warm, todo, args.nats, n, args.concurrent)
                ratio = r["events_per_s"] / base["events_per_s"]
                split = "/".join(str(s) for s in r["split"])
                print(f"{kind:9} {f'JetStream, {n} ingester(s)':22} {r['events_per_s']:9.0f} "
                      f"{ratio:12.2f} {r['publish_per_s']:10.0f} {split:>14}   "
                      f"({r['ingester_cpu_us_per_event']:.0f} us ingester CPU/event, "
                      f"{r['duplicates']} duplicates)", flush=True)
    print(f"load average (1 min) at start {load0:.1f}, at end {os.getloadavg()[0]:.1f}, on "
          f"{os.cpu_count()} cores: figures from a busy machine are lower, the ratios less so")


def _as_json(event: Any) -> Any:
    from bootwatch.protocol.outcome import outcome_to_json

    return outcome_to_json(event)


if __name__ == "__main__":
    main()
