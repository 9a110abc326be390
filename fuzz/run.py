"""Run one fuzz target under atheris (libFuzzer): ``python -m fuzz.run TARGET [libFuzzer args]``.

One target per process, because libFuzzer ends the process when its runs are done and
keeps one coverage map per process. ``scripts/fuzz`` prepares the seed folder and the
arguments; this module only instruments bootwatch, imports the harness and hands over.

Instrumentation covers the ``bootwatch`` package (the code under test), not the
libraries it calls: their coverage would steer the fuzzer into cryptography's or
lark's internals and slow every execution down.
"""

from __future__ import annotations

import sys

import atheris

__all__ = ["main"]


def main(argv: list[str]) -> None:
    """``argv``: program name, target name, then libFuzzer's own arguments."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m fuzz.run TARGET [libFuzzer args...]")
    name = argv[1]
    with atheris.instrument_imports(include=["bootwatch"]):
        from fuzz.targets import TARGETS, check

    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; targets: {', '.join(TARGETS)}")
    target = TARGETS[name]

    def one_input(data: bytes) -> None:
        check(target, data)

    atheris.Setup([argv[0], *argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
