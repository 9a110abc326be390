"""Issue 15 item 6, in the suite: a short coverage-guided run of every fuzz target.

``scripts/fuzz`` runs each harness of ``fuzz/targets.py`` under atheris for a few thousand
executions with a fixed libFuzzer seed, from the shared corpus's seeds; any exception
other than a ``BootwatchError`` (MemoryError and RecursionError included) makes the
script exit 1 with the input saved, and the test fails with the traceback. The long runs
(1,000,000 executions per target) are the script's own job: docs/fuzzing.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bootwatch.errors import BootwatchError, EventLogError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fuzz.targets import CORPUS, TARGETS, Target, check  # noqa: E402

#: executions per target: a few thousand each, sized so all four stay well under 30 s
#: (the event-log harness replays and decodes whole logs: ~300-500 executions/s)
RUNS = {"eventlog": 1500, "tpm": 5000, "azureguest": 5000, "policy": 3000, "outcome": 3000}


def test_every_target_has_a_short_run_and_seeds_from_the_corpus() -> None:
    assert set(RUNS) == set(TARGETS) == {"eventlog", "tpm", "azureguest", "policy", "outcome"}
    for target in TARGETS.values():
        seeds = list(target.seeds(CORPUS))
        assert len(seeds) >= 8, (target.name, len(seeds))
        assert all(isinstance(d, bytes) for _, d in seeds)
        # every seed is read or rejected with a typed error, as every fuzzed input must be
        for _, data in seeds:
            check(target, data)


def test_check_lets_only_bootwatch_errors_pass() -> None:
    def typed(data: bytes) -> None:
        raise EventLogError("bad", offset=len(data))

    def untyped(data: bytes) -> None:
        raise IndexError(len(data))

    def deep(data: bytes) -> None:
        raise RecursionError("too deep")

    check(Target("typed", "", 16, typed, lambda _c: iter(())), b"x")
    for run in (untyped, deep):
        with pytest.raises((IndexError, RecursionError)):
            check(Target("bad", "", 16, run, lambda _c: iter(())), b"x")
    assert issubclass(EventLogError, BootwatchError)


@pytest.mark.parametrize("target", sorted(RUNS))
def test_short_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    runs = RUNS[target]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fuzz"), "--runs", str(runs), "--seed", "7",
         "--work", str(tmp_path), target],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    log = tmp_path / target / "fuzz.log"
    detail = log.read_text(errors="replace")[-4000:] if log.exists() else proc.stderr
    assert proc.returncode == 0, f"{proc.stdout}\n{detail}"
    line = next(x for x in proc.stdout.splitlines() if x.startswith(target))
    assert " ok, cov " in line, proc.stdout
    # libFuzzer counts the seed corpus's executions too, so at least ``runs`` (not exactly)
    assert int(line.split()[1].replace(",", "")) >= runs, line
    # the fuzzer really explored: it ran every execution and grew its corpus past the seeds
    text = log.read_text()
    executed = re.search(r"stat::number_of_executed_units: (\d+)", text)
    assert executed is not None and int(executed.group(1)) >= runs, text[-2000:]
    assert "NEW " in text or "REDUCE " in text
