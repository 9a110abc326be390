"""The service's CPU floor on this stack: what a server that does NOTHING but receive the
request and answer costs, against the unavoidable cryptography, in one run.

    python benchmarks/service_floor.py [--requests 3000] [--concurrency 32]
                                       [--corpus ../shared/corpus]

Why: issue 15 asks for service CPU per attestation within 3x the unavoidable
cryptography (2 RSA verifies, the AIK chain verify, one RS256 signature, one RSAES wrap).
``benchmarks/scale.py`` measures bootwatch at about 5.3x.  This benchmark measures the
floor under any implementation on the stack the project is built on (uvicorn with
httptools and uvloop, FastAPI, Python's json), so the target can be read against it:

1. Collects ONE real AzureGuest request (about 125 KB) from a swtpm lab VM booted from
   the Azure Trusted Launch log, and measures the cryptography of one attestation in
   this process (the same code as benchmarks/service.py: the floor issue 15 names).
2. Runs, in a separate process, uvicorn (1 worker, httptools, uvloop, no access log)
   serving a FastAPI app whose ``POST /attest/AzureGuest`` reads the body, parses it
   with ``json.loads`` and answers a JSON object the size of a real answer (a 3 KB
   token).  No verification, no policy, no database, no events: a lower bound.
   ``--bare-asgi`` runs the same without FastAPI (a plain ASGI callable).
3. Drives it with the load generator of benchmarks/service.py (its own process, keep-alive
   connections, the same pre-encoded request) and prints the server's CPU per request
   as a ratio to the cryptography, and what a 3x target leaves for everything an
   attestation needs beyond receiving and answering (decoding, verifying, the log
   replay, claims, policy, the record, the event).

Machines here differ 2-3x from one session to the next: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

#: the size of a real answer: {"token": <a JWT of about 3 KB>}
ANSWER = json.dumps({"token": "e" * 3000}).encode()


def _fastapi_app() -> Any:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/attest/AzureGuest")
    async def attest(request: Request) -> Response:
        body = await request.body()
        json.loads(body)
        return Response(ANSWER, media_type="application/json")

    @app.get("/readyz")
    async def ready() -> Response:
        return Response(b"{}", media_type="application/json")

    return app


def _asgi_app() -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            json.loads(b"".join(chunks))
            body = ANSWER
        else:
            body = b"{}"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def _serve(port: int, bare: bool) -> None:
    import uvicorn

    app = _asgi_app() if bare else _fastapi_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                http="httptools", loop="uvloop", lifespan="off", server_header=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the floor server did not become ready")


def main() -> None:
    import service as bench

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=200, help="in-process crypto rounds")
    ap.add_argument("--bare-asgi", action="store_true",
                    help="a plain ASGI callable instead of FastAPI")
    ap.add_argument("--corpus", default=None)
    ns = ap.parse_args()
    corpus = bench.find_corpus(ns.corpus)
    with tempfile.TemporaryDirectory(prefix="bw-floor-") as tmp:
        work = Path(tmp)
        body, anchors = bench.collect_request(work / "lab", corpus)
        body_file = work / "request.json"
        body_file.write_bytes(body)
        cost = bench.pipeline_cost(body, anchors, corpus, ns.rounds)
        port = _free_port()
        ctx = mp.get_context("spawn")
        server = ctx.Process(target=_serve, args=(port, ns.bare_asgi), daemon=True)
        server.start()
        try:
            _wait_ready(port)
            out: mp.Queue[dict[str, Any]] = ctx.Queue()
            gen = ctx.Process(target=bench.loadgen, args=({
                "port": port, "tls": False, "body": str(body_file),
                "service_pid": server.pid, "requests": ns.requests,
                "concurrency": ns.concurrency, "rate_requests": 1, "rate": 1.0}, out))
            gen.start()
            res = out.get(timeout=900)
            gen.join()
        finally:
            server.terminate()
            server.join(10)
    closed = res["closed"]
    if closed["errors"]:
        raise SystemExit(f"the floor server answered {closed['errors']} non-200s")
    floor_ms = closed["service_cpu_ms"]
    crypto = cost["crypto_ms"]
    left = 3 * crypto - crypto - floor_ms
    kind = "plain ASGI" if ns.bare_asgi else "FastAPI"
    print(f"request {len(body):,} bytes; unavoidable cryptography {crypto:.3f} ms "
          f"(in-process, same run); bootwatch's pure pipeline in-process "
          f"{cost['pipeline_ms']:.3f} ms = {cost['pipeline_ms'] / crypto:.2f}x")
    print(f"{kind} on uvicorn (httptools, uvloop), receive + json.loads + answer only: "
          f"{floor_ms:.3f} ms server CPU per request = {floor_ms / crypto:.2f}x the "
          f"cryptography ({closed['rate']:.0f} requests/s, other processes "
          f"{closed['other_cores']:.2f} cores)")
    print(f"a 3x target leaves {left:.3f} ms ({left / crypto:.2f}x the cryptography) for "
          "everything else an attestation needs: decoding, verifying, the log replay, "
          "claims, policy, the record and its event")
    print(json.dumps({"crypto_ms": round(crypto, 3), "floor_ms": round(floor_ms, 3),
                      "floor_ratio": round(floor_ms / crypto, 2),
                      "pipeline_ms": round(cost["pipeline_ms"], 3),
                      "left_for_the_rest_ms": round(left, 3), "kind": kind}))


if __name__ == "__main__":
    main()
