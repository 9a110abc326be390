"""The batch fast path stores what the general path stores, on random operation sequences.

A short run of ``scripts/fuzz_monitor.py`` (see its docstring): for a few fixed seeds,
a random sequence of monitor operations (enable, approve, suppress, remove a variant,
alert status changes, health reports, sweeps, time passing, and outcome events whose
facts drift) is applied to two SQLite databases, one ingesting the outcome events in
random batches (so ``monitor/fastpath.py`` is taken), the other one event per call.
After every step both must return the same results and hold the same rows in every
monitor table, and each must satisfy the monitor's invariants (open-alert counts, the
state its rows give, provider binding, boots matched only to variants they match...).
Seed 19 sends most of its events through the fast path, seed 4 a mix; the test also
checks that the fast path was taken at all (else the comparison would be vacuous).

The long run (its defaults; about three minutes), worth doing after any change to
``monitor/core.py`` or ``monitor/fastpath.py``::

    .venv/bin/python scripts/fuzz_monitor.py --seeds 0 50 --steps 80
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "fuzz_monitor.py"
#: seeds whose sequences send most events through the fast path (19) and a mix (4)
SEEDS = (19, 4)
STEPS = 40


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bootwatch_fuzz_monitor", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fuzz_monitor = _load()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = fuzz_monitor.make_template(tmp_path_factory.mktemp("fuzz-monitor"))
    return path


@pytest.mark.parametrize("seed", SEEDS)
def test_batches_store_what_one_event_at_a_time_stores(template: Path, seed: int) -> None:
    ops = fuzz_monitor.ops_for_seed(seed, STEPS)
    with fuzz_monitor.count_fast_path() as fast:
        failure = fuzz_monitor.run(ops, template)
    assert failure is None, (
        f"seed {seed}, step {failure.step} ({failure.kind}): {ops[failure.step]}\n"
        + "\n".join(failure.detail[:6])
        + f"\nreplay: scripts/fuzz_monitor.py --seeds {seed} {seed + 1} --steps {STEPS}"
        " --minimise")
    assert fast.fast > 0, "no event took the fast path: the comparison checked nothing"
