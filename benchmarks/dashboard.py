"""Dashboard benchmark: server time of the fleet overview and of a VM page at
10,000 and 100,000 VMs (p50/p99), against the same queries called directly
(the floor) in the same run.

Seeding (documented in docs/dashboard.md):

* ``--real`` VMs (default 20) go through the monitor's own code: ``Monitor.enable``
  then ``Monitor.ingest_outcomes`` with outcome events built from two real corpus
  logs (Google COS 93 and COS 101: PCRs replayed, events described by the
  service's own ``describe_events``); half of them reboot into the other image,
  so they carry a real ``baseline_deviation`` alert with its event-level diff.
* the rest are bulk inserts into the monitor's tables, copying the rows the
  real VMs produced (state, recommendations, one boot, one baseline, and for
  every 20th VM an open deviation alert with the real diff); their boots keep
  the PCR values but not the event list (the pages timed here read events only
  for the VM shown, which is always a real one).

Each request goes through the whole ASGI app (``create_monitor_app``: routing,
session lookup, queries, Jinja2 rendering) in-process, with no network, so the
figure is the server's time.  Overview requests are the first page, later
pages by cursor, a state filter, a name search and a group filter; VM pages are
the real VMs, deviating and healthy.  The floor, measured in the same run, is
the same queries called directly (no HTTP, no session, no rendering).  Run::

    python benchmarks/dashboard.py [--sizes 10000,100000] [--requests 300]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from bootwatch.attest.outcome import describe_events
from bootwatch.eventlog import HashAlg, parse_log, replay
from bootwatch.monitor import queries
from bootwatch.monitor.app import create_monitor_app
from bootwatch.monitor.container import MonitorContainer, bootstrap
from bootwatch.monitor.models import (
    AlertRow,
    BaselineRow,
    BootRow,
    RecommendationRow,
    VmRow,
)
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

REPO = Path(__file__).resolve().parents[1]
LOGS = ("eventlogs/go-tpm-tools/cos-93-amd-sev.bin", "eventlogs/go-tpm-tools/cos-101-amd-sev.bin")
TOKEN = "bench-admin-token"


def boot_facts(path: Path) -> tuple[dict[int, str], tuple[Any, ...]]:
    log = parse_log(path.read_bytes())
    values = replay(log, banks=[int(HashAlg.SHA256)]).pcrs[int(HashAlg.SHA256)]
    pcrs = {p: v.hex() for p, v in values.items() if p < 16}
    return pcrs, describe_events(log, frozenset(pcrs))


def outcome(vm_id: str, facts: tuple[dict[int, str], tuple[Any, ...]], reset: int) -> OutcomeEvent:
    pcrs, events = facts
    return OutcomeEvent(
        event_id=str(uuid.uuid4()), time=datetime.now(UTC), provider="shared",
        attestation_type="azurevm", verdict=Verdict.PERMIT, reason="permitted",
        policy_hash="bench", vm_id=vm_id, pcrs=pcrs, events=events, reset_count=reset,
        secure_boot=True,
    )


def seed(container: MonitorContainer, n: int, real: int, corpus: Path) -> list[str]:
    monitor = container.monitor
    old, new = (boot_facts(corpus / p) for p in LOGS)
    real_ids = []
    for i in range(real):
        vm_id = str(uuid.UUID(int=i + 1)).upper()
        monitor.enable(vm_id, name=f"real-{i:03d}", group=f"g{i % 10}")
        monitor.ingest_outcomes([outcome(vm_id, old, 1)])
        if i % 2 == 0:
            monitor.ingest_outcomes([outcome(vm_id, new, 2)])
        real_ids.append(vm_id)
    def cols(row: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns if c.key not in drop}

    with monitor.read() as s:
        vm_h = cols(s.get(VmRow, real_ids[1]))
        vm_u = cols(s.get(VmRow, real_ids[0]))
        rec_cols = [cols(r) for r in s.scalars(
            select(RecommendationRow).where(RecommendationRow.vm_id == real_ids[1])).all()]
        boot = s.scalars(select(BootRow).where(BootRow.vm_id == real_ids[1])).first()
        alert = s.scalars(select(AlertRow).where(AlertRow.vm_id == real_ids[0])).first()
        assert boot is not None and alert is not None
        boot_cols = cols(boot, ("id",))
        alert_cols = cols(alert)
    base_cols = {"group_name": None, "label": "boot", "origin": "learned",
                 "pcrs": boot_cols["pcrs"], "events": "[]", "source_boot_id": None,
                 "created_at": boot_cols["first_seen"],
                 "created_by": "bench"}
    batch = 5000
    with container.engine.begin() as conn:
        for start in range(real, n, batch):
            vms, rrows, boots, bases, alerts = [], [], [], [], []
            for i in range(start, min(n, start + batch)):
                vm_id = str(uuid.UUID(int=i + 1)).upper()
                bad = i % 20 == 0
                row = dict(vm_u if bad else vm_h)
                row.update(vm_id=vm_id, name=f"vm-{i:06d}", group_name=f"g{i % 10}",
                           last_boot_id=None)
                vms.append(row)
                rrows.extend({**r, "vm_id": vm_id} for r in rec_cols)
                boots.append({**boot_cols, "vm_id": vm_id, "boot_key": f"k{i}"})
                bases.append({**base_cols, "vm_id": vm_id})
                if bad:
                    alerts.append({**alert_cols, "id": str(uuid.uuid4()), "vm_id": vm_id,
                                   "correlation_key": f"{vm_id}:baseline_deviation"})
            conn.execute(insert(VmRow), vms)
            conn.execute(insert(RecommendationRow), rrows)
            conn.execute(insert(BootRow), boots)
            conn.execute(insert(BaselineRow), bases)
            if alerts:
                conn.execute(insert(AlertRow), alerts)
    return real_ids


def sign_in(client: TestClient) -> None:
    page = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    r = client.post("/ui/login", data={"token": TOKEN, "csrf": csrf.group(1)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text


def timed(fn: Callable[[], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def run(n: int, real: int, rounds: int, corpus: Path) -> list[tuple[str, float, float]]:
    with tempfile.TemporaryDirectory(prefix="bw-dash-bench-") as tmp:
        t0 = time.perf_counter()
        container = bootstrap(MonitorSettings(data_dir=Path(tmp), admin_tokens=(TOKEN,)))
        real_ids = seed(container, n, real, corpus)
        print(f"  seeded {n:,} VMs in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        client = TestClient(create_monitor_app(container), base_url="http://127.0.0.1")
        sign_in(client)
        api = {"Authorization": f"Bearer {TOKEN}"}
        first = client.get("/api/v1/vms", params={"limit": 50}, headers=api).json()
        cursors = [None]
        cur = first["next_cursor"]
        for _ in range(5):
            cursors.append(cur)
            cur = client.get("/api/v1/vms", params={"limit": 50, "cursor": cur},
                             headers=api).json()["next_cursor"]
        overview_urls = [f"/ui?cursor={c}" if c else "/ui" for c in cursors]
        overview_urls += ["/ui?state=unhealthy", "/ui?q=vm-0500", "/ui?group=g3"]
        vm_urls = [f"/ui/vms/{v}" for v in real_ids]
        results = []

        def cycle(urls: list[str], headers: dict[str, str] | None = None) -> Callable[[], Any]:
            state = {"i": 0}

            def go() -> None:
                url = urls[state["i"] % len(urls)]
                state["i"] += 1
                r = client.get(url, headers=headers or {})
                assert r.status_code == 200, (url, r.status_code, r.text[:300])
            return go

        monitor = container.monitor
        filters = [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(u).query))
                   for u in overview_urls]

        def overview_floor() -> Callable[[], Any]:
            state = {"i": 0}

            def go() -> None:
                f = filters[state["i"] % len(filters)]
                state["i"] += 1
                queries.summary(monitor, recommendations=False)
                queries.list_vms(monitor, limit=50, recommendations=False, **f)
            return go

        def vm_floor() -> Callable[[], Any]:
            state = {"i": 0}

            def go() -> None:
                ref = real_ids[state["i"] % len(real_ids)]
                state["i"] += 1
                vm = queries.vm_detail(monitor, ref)
                if not any(a["status"] == "active" for a in vm["alerts"]):
                    monitor.diff(ref)
            return go

        for name, fn in (
            ("overview page (/ui)", cycle(overview_urls)),
            ("  floor: its queries alone", overview_floor()),
            ("VM page (/ui/vms/ID)", cycle(vm_urls)),
            ("  floor: its queries alone", vm_floor()),
        ):
            timed(fn, 10)  # warm-up
            t = timed(fn, rounds)
            results.append((name, statistics.median(t), pct(t, 99)))
        client.close()
        container.stop()
        return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--real", type=int, default=20)
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    args = ap.parse_args()
    target = 100.0
    for n in (int(s) for s in args.sizes.split(",")):
        print(f"{n:,} VMs ({args.real} through the monitor's ingestion, the rest bulk-inserted)")
        rows = run(n, args.real, args.requests, args.corpus)
        for i, (name, p50, p99) in enumerate(rows):
            line = f"  {name:<40} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
            if i % 2 == 0:
                line += f"  (target p99 < {target:.0f} ms: {'met' if p99 < target else 'MISSED'})"
            else:
                prev = rows[i - 1]
                line += f"  (page/floor p50 ratio {prev[1] / p50:.2f}x)"
            print(line)


if __name__ == "__main__":
    main()
