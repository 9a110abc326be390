"""The whole service's cost per attestation in instructions (callgrind), tree against tree.

    python benchmarks/service_instructions.py [--against TREE] [--requests 600]

Like ``benchmarks/pipeline_instructions.py``, but through the service: ``create_app``
with its lifespan (record writer, relay, change feed), SQLite, the edge middleware,
provider resolution, the pipeline, the group commit of each record and the answer, for
one real request from a lab VM posted ``--requests`` times over an in-process ASGI
transport (uvicorn's HTTP parsing is the one part left out).  Each tree is run with 0
and with N requests, twice at 0 (background threads make start-up vary by about 2%),
and the figure is (instructions at N - mean at 0) / N.  Start-up varies by about 250 M
instructions between runs, so N must be large: at the default 600 that is about 0.4 M
(2%) per request; the script refuses fewer than 300.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r'''
import asyncio, pathlib, sys, tempfile
tree, n, work = pathlib.Path(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
sys.path.insert(0, str(tree / "src"))
import httpx
from bootwatch.service.app import create_app
from bootwatch.service.settings import Settings
body = (work / "request.bin").read_bytes()
with tempfile.TemporaryDirectory() as d:
    settings = Settings(data_dir=pathlib.Path(d), insecure_http=True, rate_limit_per_second=0,
                        trust_anchors_path=str(work / "anchors.pem"),
                        dbx_data_path=str(work / "dbx.json"),
                        evidence_retention_seconds=0, at_rest_key="11" * 32)
    app = create_app(settings)
    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://127.0.0.1:8443") as c:
                for _ in range(3 + n):
                    r = await c.post("/attest/AzureGuest?api-version=2020-10-01", content=body)
                    assert r.status_code == 200, r.text[:300]
    asyncio.run(main())
'''


def instructions(work: Path, tree: Path, n: int) -> int:
    from pipeline_instructions import callgrind_instructions  # the one callgrind runner

    return callgrind_instructions(str(work / "service_child.py"), str(tree), str(n), str(work))


def per_request(work: Path, tree: Path, n: int) -> float:
    base = statistics.mean(instructions(work, tree, 0) for _ in range(2))
    return (instructions(work, tree, n) - base) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", type=Path, help="another source tree to compare with")
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    args = ap.parse_args()
    if args.requests < 300:
        ap.error("--requests below 300 leaves start-up's variation in the figure")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from pipeline_instructions import prepare  # the same request, CA and DBX data

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        prepare(work, args.corpus)
        (work / "service_child.py").write_text(CHILD)
        this = per_request(work, REPO, args.requests)
        other = per_request(work, args.against, args.requests) if args.against else None
    line = f"service, per attestation: {this / 1e6:8.2f} M instructions"
    if other is not None:
        line += f"   against {args.against}: {other / 1e6:8.2f} M (ratio {this / other:.3f})"
    print(line)


if __name__ == "__main__":
    main()
