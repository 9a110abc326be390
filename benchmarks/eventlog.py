"""Benchmark: event-log parse + replay (and boot state) over the whole corpus.

In-process timings of bootwatch, side by side in the same run with Debian's
``tpm2_eventlog`` (a whole process per log, as a user would run it), and the
ratio.  Prints per-log figures and totals; medians of repeated rounds.

    python benchmarks/eventlog.py [--rounds 30] [--peer-rounds 3] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _load import MachineLoad

from bootwatch.errors import BootwatchError
from bootwatch.eventlog import parse_log, replay

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BOOTWATCH_SHARED", REPO.parent / "shared")).resolve()
_SKIP = (".json", ".yaml", ".yml", ".txt", ".warn", ".md")
MIN_RECORDS = 15


def _corpus(root: Path) -> list[tuple[str, bytes]]:
    return [
        (str(p.relative_to(root)), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(_SKIP)
    ]


def _time_us(fn: Callable[[], Any], rounds: int, inner: int) -> float:
    """Median over ``rounds`` of the mean time of ``inner`` calls, in microseconds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter_ns() - start) / inner / 1000)
    return statistics.median(samples)


def _peer_ms(tool: str, path: Path, rounds: int) -> tuple[float, int]:
    samples = []
    rc = 0
    for _ in range(rounds):
        start = time.perf_counter_ns()
        proc = subprocess.run(
            [tool, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
        samples.append((time.perf_counter_ns() - start) / 1e6)
        rc = proc.returncode
    return statistics.median(samples), rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=SHARED / "corpus" / "eventlogs")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--inner", type=int, default=20)
    ap.add_argument("--peer-rounds", type=int, default=3)
    args = ap.parse_args()
    load = MachineLoad()

    try:
        state_mod: Any = importlib.import_module("bootwatch.eventlog.state")
        extract = state_mod.extract_boot_state
    except (ImportError, AttributeError):
        extract = None
    peer = shutil.which("tpm2_eventlog")

    rows = []
    for name, data in _corpus(args.corpus):
        try:
            log = parse_log(data)
        except BootwatchError:
            print(f"{name}: rejected (negative test), not timed")
            continue
        records = len(log.events)

        def pr(data: bytes = data) -> None:
            replay(parse_log(data))

        us = _time_us(pr, args.rounds, args.inner)
        state_us = None
        if extract is not None:

            def full(data: bytes = data) -> None:
                lg = parse_log(data)
                replay(lg)
                extract(lg)

            state_us = _time_us(full, max(5, args.rounds // 3), max(1, args.inner // 4))
        peer_ms = peer_rc = None
        if peer is not None:
            peer_ms, peer_rc = _peer_ms(peer, args.corpus / name, args.peer_rounds)
        rows.append((name, records, us, state_us, peer_ms, peer_rc))

    print()
    print(
        f"{'log':62} {'recs':>5} {'parse+replay':>13} {'+state':>9} "
        f"{'tpm2_eventlog':>14} {'ratio':>7}"
    )
    for name, records, us, state_us, peer_ms, peer_rc in rows:
        st = f"{state_us:8.0f}u" if state_us is not None else "        -"
        if peer_ms is not None:
            pm = f"{peer_ms:9.2f} ms" + ("" if peer_rc == 0 else f" rc{peer_rc}")
            ratio = f"{peer_ms * 1000 / us:6.0f}x"
        else:
            pm, ratio = "-", "-"
        print(f"{name[:62]:62} {records:5d} {us:10.1f} us {st} {pm:>14} {ratio:>7}")

    big = [r for r in rows if r[1] >= MIN_RECORDS]
    med = statistics.median(r[2] for r in big)
    total = sum(r[2] for r in rows)
    print()
    print(f"logs timed: {len(rows)}; logs of >= {MIN_RECORDS} records: {len(big)}")
    print(f"parse+replay median per log (>= {MIN_RECORDS} records): {med:.1f} us")
    print(f"parse+replay median per log (all): {statistics.median(r[2] for r in rows):.1f} us")
    print(f"parse+replay whole corpus: {total / 1000:.2f} ms")
    if extract is not None:
        smed = statistics.median(r[3] for r in big if r[3] is not None)
        print(f"parse+replay+boot state median per log (>= {MIN_RECORDS} records): {smed:.1f} us")
    if peer is not None:
        ok = [r for r in big if r[5] == 0]
        pmed = statistics.median(r[4] for r in ok)
        ratios = [r[4] * 1000 / r[2] for r in ok]
        print(f"tpm2_eventlog median per log (>= {MIN_RECORDS} records, exit 0): {pmed:.2f} ms")
        print(
            f"ratio of medians: {pmed * 1000 / med:.0f}x; "
            f"per-log ratio median {statistics.median(ratios):.0f}x, min {min(ratios):.0f}x"
        )
    else:
        print("tpm2_eventlog not installed: no peer comparison")
    print(load.report())


if __name__ == "__main__":
    main()
