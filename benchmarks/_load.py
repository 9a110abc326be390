"""How busy the machine was while a benchmark ran, so a reader can tell a quiet run
from a loaded one (the same figure ``benchmarks/service.py`` prints).

Other users share this machine's cores: a timing taken while they used one of two
cores is not the same figure as on an idle machine.  :class:`MachineLoad` reads the
machine's busy CPU time (``/proc/stat``) at the start and the end, subtracts what this
process and its children used (``getrusage``), and reports the rest per second of
wall time: the cores other processes used during the run.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

__all__ = ["MachineLoad"]

_TICK = os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICK


def _own_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class MachineLoad:
    """Start at construction; :meth:`report` gives one line for the benchmark's output."""

    def __init__(self) -> None:
        self.machine0 = _machine_busy_seconds()
        self.own0 = _own_seconds()
        self.wall0 = time.perf_counter()

    def other_cores(self) -> float:
        """Cores used by other processes since the start (0 = a quiet machine)."""
        wall = time.perf_counter() - self.wall0
        others = (_machine_busy_seconds() - self.machine0) - (_own_seconds() - self.own0)
        return max(0.0, others) / wall if wall > 0 else 0.0

    def report(self) -> str:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        return (f"machine: {os.cpu_count()} cores; other processes used "
                f"{self.other_cores():.2f} cores during this run (load average {load})")
