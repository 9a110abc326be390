"""The garbage collector's settings for a long-running server process.

Why: a server allocates in bursts that outlive a young collection (a batch of 500
decoded outcome events holds about 50,000 objects; an attestation some thousands),
so with CPython's default thresholds (a young collection every 700 allocations)
the same live objects are walked again and again, and promoted ones drag the
older generations into full collections.  Measured on the JetStream ingester
(``benchmarks/ingest_nats.py``): decoding an event took 300 us of CPU with the
defaults and 200 us with the young threshold at 10,000 and start-up objects
frozen.  What start-up allocated (modules, SQLAlchemy's and FastAPI's metadata:
about 120,000 objects) stays alive, so it is frozen: moved out of the
collector's generations, a full collection no longer walks it (each took 50-100
ms at 100,000 VMs, the whole of the fleet list's p99).  Memory grows by at most
the young threshold's worth of garbage between collections.

The service app's lifespan settles the collector after start-up and restores it
at shutdown; the standalone monitor's does the same.  Settling does not nest: the
collector is the process's, so two apps in one process (tests) share one setting, and
the first to stop restores the defaults and unfreezes for both (which costs the other
speed, never correctness).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Final

__all__ = ["THRESHOLDS", "SettledCollector", "settle_collector"]

#: (young, middle, old) thresholds of a settled server process
THRESHOLDS: Final = (10_000, 20, 20)


@dataclass(frozen=True)
class SettledCollector:
    """What :func:`settle_collector` changed, to undo it at shutdown."""

    previous: tuple[int, int, int]

    def release(self) -> None:
        gc.unfreeze()
        gc.set_threshold(*self.previous)


def settle_collector() -> SettledCollector:
    """Freeze what is alive now and raise the thresholds (call once start-up is done)."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return SettledCollector(previous)
