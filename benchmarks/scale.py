"""Scale-out benchmark: service replicas behind HAProxy on PostgreSQL with outcome events on,
and a soak.

    python benchmarks/scale.py [--replicas 1,2] [--events nats://127.0.0.1:4222 | none]
                               [--requests 3000] [--concurrency 32]
    python benchmarks/scale.py --soak-minutes 10 [--soak-fraction 0.8]

What it does (real processes on loopback):

1. Collects ONE real AzureGuest request from a swtpm lab VM (benchmarks/service.py) and
   measures, in this process, the unavoidable cryptography of one attestation (2 RSA
   verifies, the AIK chain verify, one RS256 signature, one RSAES wrap): the floor.
2. For each replica count: a fresh PostgreSQL schema, N ``bootwatch service run``
   processes (1 worker each, ``--events`` as given: every attestation's outcome event is
   committed with its record and relayed to JetStream), HAProxy round robin in front.
3. A closed loop of ``--concurrency`` keep-alive connections through HAProxy (the load
   generator of benchmarks/service.py, in its own process): attestations/s, and the CPU
   all replica processes used per attestation, printed as a ratio to the floor (target
   at most 3x), split into the pure pipeline measured in this process on the same
   request and the rest a replica does per request.  Every non-200 answer is counted;
   the run fails if any occurs.
4. ``--soak-minutes M``: one replica count (the largest), first the closed-loop maximum,
   then an open loop at ``--soak-fraction`` of it for M minutes, sampling the resident
   memory of every replica (and HAProxy) every 10 s: errors, and each process's growth
   after the first fifth of the run (target under 5%).

Machines here differ 2-3x from one session to the next: read the ratios, not the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import MachineLoad
from ingest_nats import _delete_stream

from service import (
    _closed_loop,
    _open_loop,
    _request_bytes,
    collect_request,
    find_corpus,
    free_port,
    pct,
    pipeline_cost,
    tree_cpu,
)

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN = "scale-bench-admin-token-0123456789"


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Deployment:
    """PostgreSQL schema + N replicas + HAProxy, torn down on exit."""

    def __init__(self, work: Path, replicas: int, anchors: Path, corpus: Path,
                 events: str) -> None:
        self.work = work
        self.schema = f"bw_bench_{uuid.uuid4().hex[:8]}"
        self.ports = [free_port() for _ in range(replicas)]
        self.lb_port = free_port()
        self.anchors = anchors
        self.corpus = corpus
        self.events = events
        self.procs: list[subprocess.Popen[bytes]] = []
        self.lb: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Deployment:
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        engine.dispose()
        env = dict(os.environ, BOOTWATCH_AT_REST_KEY=os.urandom(32).hex(),
                   BOOTWATCH_ADMIN_TOKENS=ADMIN)
        db = ["--db", PG_URL, "--db-schema", self.schema]
        subprocess.run([sys.executable, "-m", "bootwatch.cli.main", "service", "migrate", *db,
                        "--data-dir", str(self.work / "cli")], env=env, check=True,
                       capture_output=True)
        for i, port in enumerate(self.ports):
            args = [sys.executable, "-m", "bootwatch.cli.main", "service", "run",
                    "--insecure-http", "--port", str(port), "--workers", "1", *db,
                    "--data-dir", str(self.work / f"r{i}"), "--rate-limit", "0",
                    "--evidence-retention", "0", "--trust-anchors", str(self.anchors),
                    "--dbx-data", str(self.corpus / "secureboot" / "dbx_info_msft_latest.json"),
                    "--public-url", f"http://127.0.0.1:{self.lb_port}", "--log-level", "WARNING"]
            if self.events != "none":
                args += ["--events", self.events,
                         "--events-stream", f"BENCH_{self.schema.upper()}",
                         "--events-subject", f"bench.{self.schema}"]
            self.procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        for port in self.ports:
            _wait_ready(port)
        cfg = self.work / "haproxy.cfg"
        servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check inter 2s"
                            for i, p in enumerate(self.ports))
        cfg.write_text(f"""global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    option http-keep-alive
frontend attestation
    bind 127.0.0.1:{self.lb_port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
{servers}
""")
        self.lb = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ready(self.lb_port)
        return self

    def cpu(self) -> float:
        """CPU seconds of every replica process tree and HAProxy so far."""
        total = 0.0
        for p in [*self.procs, *([self.lb] if self.lb else [])]:
            total += sum(tree_cpu(p.pid).values())
        return total

    def replica_cpu(self) -> float:
        return sum(sum(tree_cpu(p.pid).values()) for p in self.procs)

    def rss(self) -> dict[str, int]:
        out = {}
        for i, p in enumerate(self.procs):
            for pid in tree_cpu(p.pid):
                out[f"replica{i}:{pid}"] = _rss_kib(pid)
        if self.lb is not None:
            out["haproxy"] = _rss_kib(self.lb.pid)
        return out

    def __exit__(self, *exc: object) -> None:
        if self.lb is not None:
            self.lb.terminate()
            self.lb.wait(timeout=30)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        from sqlalchemy import create_engine, text

        engine = create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        engine.dispose()
        if self.events.startswith("nats://"):
            # each stream reserves its byte limit in JetStream's store: leave none behind
            try:
                asyncio.run(_delete_stream(self.events, f"BENCH_{self.schema.upper()}"))
            except Exception as exc:
                print(f"note: stream BENCH_{self.schema.upper()} not deleted: {exc!r}",
                      file=sys.stderr)


def _wait_ready(port: int) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing ready on port {port}")


def _loadgen(args: dict[str, Any], out: mp.Queue) -> None:  # type: ignore[type-arg]
    payload = _request_bytes(Path(args["body"]).read_bytes(), args["port"])
    if args["mode"] == "closed":
        asyncio.run(_closed_loop(args["port"], False, payload, 200, args["concurrency"]))
        out.put(asyncio.run(_closed_loop(args["port"], False, payload, args["requests"],
                                         args["concurrency"])))
    else:
        out.put(asyncio.run(_open_loop(args["port"], False, payload, args["requests"],
                                       args["rate"], args["concurrency"])))


def _run_load(dep: Deployment, body_file: Path, **kw: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    p = ctx.Process(target=_loadgen, args=({"port": dep.lb_port, "body": str(body_file), **kw},
                                           q))
    p.start()
    res: dict[str, Any] = q.get(timeout=7200)
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicas", default="1,2")
    ap.add_argument("--events", default="nats://127.0.0.1:4222",
                    help="--events of every replica, or 'none'")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=200, help="in-process rounds of the floor")
    ap.add_argument("--soak-minutes", type=float, default=0.0)
    ap.add_argument("--soak-fraction", type=float, default=0.8)
    ap.add_argument("--corpus", default=None)
    ns = ap.parse_args()
    if shutil.which("haproxy") is None:
        raise SystemExit("haproxy is not installed (scripts/setup installs it)")

    corpus = find_corpus(ns.corpus)
    load = MachineLoad()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bootwatch-scale-") as tmp:
        work = Path(tmp)
        body, anchors = collect_request(work / "lab", corpus)
        body_file = work / "request.json"
        body_file.write_bytes(body)
        cost = pipeline_cost(body, anchors, corpus, ns.rounds)
        counts = [int(n) for n in ns.replicas.split(",")]
        if ns.soak_minutes:
            counts = [max(counts)]
        for n in counts:
            with Deployment(work / f"d{n}", n, anchors, corpus, ns.events) as dep:
                cpu0 = dep.replica_cpu()
                res = _run_load(dep, body_file, mode="closed", requests=ns.requests,
                                concurrency=ns.concurrency)
                cpu_ms = (dep.replica_cpu() - cpu0) / ns.requests * 1000
                row = {"replicas": n, "rate": res["rate"], "errors": res["errors"],
                       "statuses": res["statuses"], "p50_ms": pct(res["latencies"], 50),
                       "p99_ms": pct(res["latencies"], 99), "service_cpu_ms": cpu_ms,
                       "ratio_to_crypto": cpu_ms / cost["crypto_ms"],
                       "pipeline_ms": cost["pipeline_ms"],
                       "rest_ms": cpu_ms - cost["pipeline_ms"]}
                results.append(row)
                print(f"{n} replica(s) behind HAProxy, PostgreSQL, events {ns.events}: "
                      f"{res['rate']:.0f} attestations/s (closed loop, {ns.concurrency} "
                      f"connections, {ns.requests} requests); p50 {row['p50_ms']:.1f} ms, "
                      f"p99 {row['p99_ms']:.1f} ms; service CPU {cpu_ms:.2f} ms per "
                      f"attestation = {row['ratio_to_crypto']:.2f}x the unavoidable crypto "
                      f"({cost['crypto_ms']:.2f} ms, same run); non-200: {res['errors']} "
                      f"{res['statuses']}", flush=True)
                # what the ratio is made of, same run: the pure pipeline in this process
                # (decode, verify, replay, claims, policy, sign, seal) and everything else
                # a replica does per request (HTTP, middleware, the record and its outbox
                # row, the relay, the publish)
                print(f"  of which the pipeline alone (in-process, same request, repeat "
                      f"boot): {cost['pipeline_ms']:.2f} ms = "
                      f"{cost['pipeline_ms'] / cost['crypto_ms']:.2f}x the crypto; the rest "
                      f"per request {row['rest_ms']:.2f} ms = "
                      f"{row['rest_ms'] / cost['crypto_ms']:.2f}x", flush=True)
                if ns.soak_minutes:
                    soak(dep, body_file, res["rate"] * ns.soak_fraction, ns, results)
    print(load.report())
    print(json.dumps({"crypto_ms": round(cost["crypto_ms"], 3),
                      "pipeline_ms": round(cost["pipeline_ms"], 3), "results": results}))
    if any(r.get("errors") for r in results):
        sys.exit(1)


def soak(dep: Deployment, body_file: Path, rate: float, ns: argparse.Namespace,
         results: list[dict[str, Any]]) -> None:
    """Open loop at ``rate`` for the soak minutes, sampling RSS every 10 s."""
    seconds = ns.soak_minutes * 60
    total = int(rate * seconds)
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    p = ctx.Process(target=_loadgen, args=({"port": dep.lb_port, "body": str(body_file),
                                            "mode": "open", "requests": total, "rate": rate,
                                            "concurrency": ns.concurrency}, q))
    p.start()
    samples: list[tuple[float, dict[str, int]]] = []
    t0 = time.monotonic()
    while p.is_alive() and q.empty():
        samples.append((time.monotonic() - t0, dep.rss()))
        time.sleep(10)
    res: dict[str, Any] = q.get(timeout=seconds + 600)
    p.join()
    warm = [s for t, s in samples if t >= seconds / 5]
    growth: dict[str, float] = {}
    if len(warm) >= 2:
        for name, first in warm[0].items():
            last = warm[-1].get(name, 0)
            if first:
                growth[name] = (last - first) / first * 100
    row = {"soak_minutes": ns.soak_minutes, "offered_rate": rate,
           "achieved_rate": res["achieved_rate"], "errors": res["errors"],
           "p50_ms": pct(res["latencies"], 50), "p99_ms": pct(res["latencies"], 99),
           "rss_growth_pct_after_warmup": {k: round(v, 1) for k, v in growth.items()},
           "rss_kib_last": warm[-1] if warm else {}}
    results.append(row)
    worst = max(growth.values(), default=0.0)
    print(f"soak: {ns.soak_minutes:g} min at {rate:.0f}/s offered ({ns.soak_fraction:.0%} of "
          f"the maximum): achieved {res['achieved_rate']:.0f}/s, errors {res['errors']}, "
          f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms; resident memory growth "
          f"after the first fifth, per process: {row['rss_growth_pct_after_warmup']} "
          f"(worst {worst:.1f}%, target < 5%)", flush=True)


if __name__ == "__main__":
    main()
