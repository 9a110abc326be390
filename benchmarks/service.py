"""Attestation service benchmark: end-to-end HTTP throughput and latency, and pipeline cost.

    python benchmarks/service.py [--workers 2] [--requests 6000] [--concurrency 32]
                                 [--rate 500] [--tls] [--corpus ../shared/corpus]

What it does:

1. Creates a lab VM (swtpm) booted from the real Azure Trusted Launch log and
   collects ONE real AzureGuest request from its vTPM (the protocol has no
   server nonce, so the same request can be replayed; every replay runs the
   whole pipeline: decode, quote/certify/AIK-chain verification, log replay,
   claims, policy, RS256 signature, RSAES key wrap, AES-GCM).  The request is
   permitted by the shared provider's default policy.
2. Starts ``bootwatch service run`` (SQLite, ``--workers N``, rate limit off,
   evidence not retained; one attestation record written per request) on a
   free loopback port.
3. Runs the load generator in a SEPARATE process: asyncio, persistent
   keep-alive HTTP/1.1 connections, pre-encoded requests, a fixed request
   count.  Phase A (closed loop, ``--concurrency`` connections): attestations/s.
   Phase B (open loop at ``--rate``/s): p50/p99 latency measured from each
   request's scheduled send time (no coordinated omission).
4. Measures in-process: the pipeline per attestation (median), next to the
   unavoidable cryptography alone (2 RSA verifies, the AIK chain verify, one
   RS256 signature, one RSAES wrap) on the same machine.

Every non-200 answer is counted and reported; the run fails if any occurs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AZURE_LOG = "maa/azure-guest-vm-derived/azure-trusted-launch-ws2019.tcglog.bin"
WINDOWS_PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14)
#: seconds between opening two load-generator connections
STAGGER = 0.01


def find_corpus(arg: str | None) -> Path:
    from bootwatch.cli.demo import find_corpus as _find

    return _find(Path(arg) if arg else None)


def collect_request(lab_dir: Path, corpus: Path) -> tuple[bytes, Path]:
    """One real request body from a lab VM booted from the Azure Trusted Launch log."""
    from bootwatch.agent.evidence import OsInfo, collect_evidence
    from bootwatch.lab import Lab

    lab = Lab(lab_dir)
    lab.create_vm("bench", corpus / AZURE_LOG)
    with lab.running("bench") as vm:
        ev = collect_evidence(
            vm.tcti, tcg_log=(corpus / AZURE_LOG).read_bytes(),
            os_info=OsInfo("Windows", "Microsoft", 10, 0, "NotApplicable"),
            client_payload={"nonce": "benchmark"}, pcr_indices=WINDOWS_PCRS,
        )
    return ev.request_body(), lab.ca_cert_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(work: Path, port: int, workers: int, tls: bool, anchors: Path,
                  corpus: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "bootwatch.cli.main", "service", "run",
        "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(work / "service"),
        "--workers", str(workers), "--rate-limit", "0", "--evidence-retention", "0",
        "--trust-anchors", str(anchors),
        "--dbx-data", str(corpus / "secureboot" / "dbx_info_msft_latest.json"),
        "--log-level", "WARNING",
    ]
    if not tls:
        args.append("--insecure-http")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    scheme = "https" if tls else "http"
    ctx = ssl._create_unverified_context() if tls else None  # loopback benchmark only
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"service exited: {err}")
        try:
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/readyz", context=ctx,
                                        timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("service did not become ready")


# --- CPU accounting -------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[int, float]:
    """User+system CPU seconds of process ``root`` and each live descendant (/proc)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return {pid: cpu.get(pid, 0.0) for pid in tree}


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


class CpuMeter:
    """CPU spent by the service (all its workers), by this load generator and by every
    other process on the machine (other users share these cores) in a phase."""

    def __init__(self, service_pid: int) -> None:
        self.pid = service_pid
        self.service0 = tree_cpu(service_pid)
        self.self0 = time.process_time()
        self.machine0 = machine_busy_seconds()
        self.wall0 = time.perf_counter()

    def done(self, requests: int) -> dict[str, Any]:
        now = tree_cpu(self.pid)
        per = {pid: now[pid] - self.service0.get(pid, 0.0) for pid in now}
        own = time.process_time() - self.self0
        wall = time.perf_counter() - self.wall0
        others = machine_busy_seconds() - self.machine0 - sum(per.values()) - own
        return {"service_cpu_ms": sum(per.values()) / requests * 1000,
                "other_cores": max(0.0, others) / wall,
                "loadgen_cpu_ms": own / requests * 1000,
                # how evenly the kernel/asyncio spread the work over the worker processes
                "process_cpu_s": sorted((round(v, 2) for v in per.values() if v > 0.05),
                                        reverse=True)}


# --- load generator (runs in its own process) ---------------------------------------


def _request_bytes(body: bytes, port: int) -> bytes:
    head = (
        f"POST /attest/AzureGuest?api-version=2020-10-01 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(length)
    return status


async def _connect(port: int, tls: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return await asyncio.open_connection("127.0.0.1", port, ssl=ctx)


async def _closed_loop(port: int, tls: bool, payload: bytes, total: int, conc: int) -> dict:
    counter = {"left": total, "errors": 0, "statuses": {}}
    lat: list[float] = []

    async def worker(index: int) -> None:
        # connections open one by one while load is flowing, as a fleet's would: a
        # burst of simultaneous connects is accepted whole by whichever uvicorn
        # worker wakes first (asyncio accepts up to the backlog at once)
        await asyncio.sleep(index * STAGGER)
        reader, writer = await _connect(port, tls)
        while counter["left"] > 0:
            counter["left"] -= 1
            t = time.perf_counter()
            writer.write(payload)
            status = await _read_response(reader)
            lat.append(time.perf_counter() - t)
            if status != 200:
                counter["errors"] += 1
                counter["statuses"][status] = counter["statuses"].get(status, 0) + 1
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(conc)))
    elapsed = time.perf_counter() - start
    return {"requests": total, "seconds": elapsed, "rate": total / elapsed,
            "errors": counter["errors"], "statuses": counter["statuses"], "latencies": lat}


async def _open_loop(port: int, tls: bool, payload: bytes, total: int, rate: float,
                     conns: int) -> dict:
    queue: asyncio.Queue[float] = asyncio.Queue()
    lat: list[float] = []
    errors = {"n": 0}

    async def worker(index: int) -> None:
        await asyncio.sleep(index * STAGGER)
        reader, writer = await _connect(port, tls)
        while True:
            scheduled = await queue.get()
            if scheduled < 0:
                break
            writer.write(payload)
            status = await _read_response(reader)
            lat.append(time.perf_counter() - scheduled)
            if status != 200:
                errors["n"] += 1
        writer.close()

    tasks = [asyncio.create_task(worker(i)) for i in range(conns)]
    await asyncio.sleep(0.2 + conns * STAGGER)  # connections up
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)
    for _ in tasks:
        queue.put_nowait(-1.0)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {"requests": total, "seconds": elapsed, "achieved_rate": total / elapsed,
            "errors": errors["n"], "latencies": lat}


def loadgen(args: dict, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Entry point of the load-generator process."""
    try:  # the cheapest event loop available: the generator shares the cores it measures
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    payload = _request_bytes(Path(args["body"]).read_bytes(), args["port"])
    # warm-up: every worker process compiles the policy, loads keys, fills caches
    run(_closed_loop(args["port"], args["tls"], payload, 200, args["concurrency"]))
    meter = CpuMeter(args["service_pid"])
    a = run(_closed_loop(args["port"], args["tls"], payload, args["requests"],
                         args["concurrency"]))
    a.update(meter.done(args["requests"]))
    meter = CpuMeter(args["service_pid"])
    b = run(_open_loop(args["port"], args["tls"], payload, args["rate_requests"],
                       args["rate"], args["concurrency"]))
    b.update(meter.done(args["rate_requests"]))
    out.put({"closed": a, "open": b})


# --- in-process pipeline cost ----------------------------------------------------------


def pipeline_cost(body: bytes, anchors: Path, corpus: Path, rounds: int) -> dict:
    import jwt
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from bootwatch.attest.claims import dbx_reference_from_json
    from bootwatch.attest.pipeline import ProviderInputs, Verdict, attest_azure_guest
    from bootwatch.policy import default_azureguest_policy
    from bootwatch.policy.compiler import compile_policy
    from bootwatch.policy.hashes import policy_hash
    from bootwatch.protocol.azureguest import decode_request
    from bootwatch.tpm.aik import TrustAnchors
    from bootwatch.tpm.public import parse_public_or_read_public, parse_tpm2b_public

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    text = default_azureguest_policy()
    dbx_path = corpus / "secureboot" / "dbx_info_msft_latest.json"
    inputs = ProviderInputs(
        issuer="https://127.0.0.1", policy=compile_policy(text), policy_hash=policy_hash(text),
        sign=lambda c: jwt.encode(dict(c), key, algorithm="RS256", headers={"kid": "k"}),
        trust_anchors=TrustAnchors.from_pem([anchors.read_bytes()]),
        dbx_reference=dbx_reference_from_json(dbx_path.read_bytes(), source=dbx_path.name),
    )
    now = datetime.now(UTC)
    from dataclasses import replace

    from bootwatch.attest.caches import VerifierCaches
    from bootwatch.lru import BoundedLru

    caches = VerifierCaches()  # what the service's container owns
    first = attest_azure_guest(body, provider=inputs, now=now, caches=caches)
    if first.verdict is not Verdict.PERMIT:
        raise SystemExit(f"benchmark request not permitted in-process: {first.reason}")

    times, cold = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        attest_azure_guest(body, provider=inputs, now=now, caches=caches)
        times.append(time.perf_counter() - t)
        # a new boot of a VM seen before: its AIK is known, its log and boot facts not
        new_boot = replace(caches, logs=BoundedLru(4), boot_facts=BoundedLru(4))
        t = time.perf_counter()
        attest_azure_guest(body, provider=inputs, now=now, caches=new_boot)
        cold.append(time.perf_counter() - t)

    # the unavoidable cryptography of one attestation, alone
    req = decode_request(body)
    aik = parse_public_or_read_public(req.tpm_info.aik_pub).public_key()
    enc = parse_tpm2b_public(req.tpm_info.enc_key_pub).public_key()
    from cryptography import x509

    leaf = x509.load_der_x509_certificate(req.tpm_info.aik_cert or b"")
    issuers = x509.load_pem_x509_certificates(anchors.read_bytes())
    issuer = next(c for c in issuers if c.subject == leaf.issuer)
    claims = first.token_claims or {}
    crypto = []
    for _ in range(rounds):
        t = time.perf_counter()
        aik.verify(req.tpm_info.pcr_signature, req.tpm_info.pcr_quote,  # type: ignore[union-attr]
                   padding.PKCS1v15(), hashes.SHA256())
        aik.verify(req.tpm_info.enc_key_certify_info_signature,  # type: ignore[union-attr]
                   req.tpm_info.enc_key_certify_info, padding.PKCS1v15(), hashes.SHA256())
        leaf.verify_directly_issued_by(issuer)
        jwt.encode(dict(claims), key, algorithm="RS256")
        enc.encrypt(os.urandom(32), padding.PKCS1v15())  # type: ignore[union-attr]
        crypto.append(time.perf_counter() - t)
    return {"pipeline_ms": statistics.median(times) * 1000,
            "pipeline_cold_ms": statistics.median(cold) * 1000,
            "crypto_ms": statistics.median(crypto) * 1000}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--rate-requests", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=300, help="in-process rounds")
    ap.add_argument("--tls", action="store_true", help="HTTPS instead of plain HTTP")
    ap.add_argument("--corpus", default=None)
    ns = ap.parse_args()

    corpus = find_corpus(ns.corpus)
    with tempfile.TemporaryDirectory(prefix="bootwatch-bench-") as tmp:
        work = Path(tmp)
        body, anchors = collect_request(work / "lab", corpus)
        body_file = work / "request.json"
        body_file.write_bytes(body)

        cost = pipeline_cost(body, anchors, corpus, ns.rounds)
        port = free_port()
        proc = start_service(work, port, ns.workers, ns.tls, anchors, corpus)
        try:
            ctx = mp.get_context("spawn")
            q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
            args = {"port": port, "tls": ns.tls, "body": str(body_file),
                    "requests": ns.requests, "concurrency": ns.concurrency,
                    "rate": ns.rate, "rate_requests": ns.rate_requests,
                    "service_pid": proc.pid}
            p = ctx.Process(target=loadgen, args=(args, q))
            p.start()
            res = q.get(timeout=900)
            p.join()
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    a, b = res["closed"], res["open"]
    scheme = "HTTPS" if ns.tls else "HTTP"
    print(f"machine: {os.cpu_count()} cores; service workers: {ns.workers}; {scheme} keep-alive; "
          f"request {len(body)} bytes (real lab-VM AzureGuest request, permitted)")
    print(f"in-process pipeline per attestation (median of {ns.rounds}): "
          f"{cost['pipeline_ms']:.2f} ms repeat boot (boot facts memoised), "
          f"{cost['pipeline_cold_ms']:.2f} ms first sighting of a boot; unavoidable crypto "
          f"alone: {cost['crypto_ms']:.2f} ms (ratio {cost['pipeline_ms'] / cost['crypto_ms']:.2f}x"
          f" / {cost['pipeline_cold_ms'] / cost['crypto_ms']:.2f}x)")
    print(f"closed loop, {ns.concurrency} connections, {a['requests']} requests: "
          f"{a['rate']:.0f} attestations/s; p50 {pct(a['latencies'], 50):.1f} ms, "
          f"p99 {pct(a['latencies'], 99):.1f} ms; non-200: {a['errors']} {a['statuses']}")
    print(f"  CPU per request: service {a['service_cpu_ms']:.2f} ms (all workers), "
          f"load generator {a['loadgen_cpu_ms']:.2f} ms; CPU s per service process "
          f"{a['process_cpu_s']}; other processes used {a['other_cores']:.2f} cores")
    print(f"open loop at {ns.rate:.0f}/s offered, {b['requests']} requests: achieved "
          f"{b['achieved_rate']:.0f}/s; p50 {pct(b['latencies'], 50):.1f} ms, "
          f"p99 {pct(b['latencies'], 99):.1f} ms; non-200: {b['errors']}")
    print(f"  CPU per request: service {b['service_cpu_ms']:.2f} ms (all workers), "
          f"load generator {b['loadgen_cpu_ms']:.2f} ms; CPU s per service process "
          f"{b['process_cpu_s']}; other processes used {b['other_cores']:.2f} cores")
    cores = os.cpu_count() or 1
    ceiling = cores * 1000 / (a["service_cpu_ms"] + a["loadgen_cpu_ms"])
    print(f"CPU-bound ceiling on {cores} otherwise idle cores (derived: cores / CPU per "
          f"request of service + load generator): {ceiling:.0f} attestations/s")
    print(json.dumps({"pipeline_ms": round(cost["pipeline_ms"], 3),
                      "pipeline_cold_ms": round(cost["pipeline_cold_ms"], 3),
                      "crypto_ms": round(cost["crypto_ms"], 3),
                      "throughput_per_s": round(a["rate"], 1),
                      "service_cpu_ms": round(a["service_cpu_ms"], 3),
                      "loadgen_cpu_ms": round(a["loadgen_cpu_ms"], 3),
                      "other_cores": round(a["other_cores"], 2),
                      "cpu_ceiling_per_s": round(ceiling),
                      "open_loop_rate": ns.rate,
                      "open_loop_p50_ms": round(pct(b["latencies"], 50), 2),
                      "open_loop_p99_ms": round(pct(b["latencies"], 99), 2),
                      "errors": a["errors"] + b["errors"]}))
    if a["errors"] or b["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
