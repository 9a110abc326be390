"""Property tests on the framing: truncated or corrupted logs never escape as
anything but a BootwatchError (or parse into a valid log that replays)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootwatch.errors import BootwatchError
from bootwatch.eventlog import parse_log, replay, verify_pcrs

SHARED = Path(
    os.environ.get("BOOTWATCH_SHARED", Path(__file__).resolve().parents[3] / "shared")
).resolve()
LOGS = SHARED / "corpus" / "eventlogs"
_SKIP = (".json", ".yaml", ".yml", ".txt", ".warn", ".md")
CORPUS = sorted(
    p.read_bytes() for p in LOGS.rglob("*") if p.is_file() and not p.name.endswith(_SKIP)
)
CORPUS = [c for c in CORPUS if c]

_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_error(blob: bytes) -> None:
    try:
        log = parse_log(blob)
    except BootwatchError:
        return
    rep = replay(log)
    assert len(log.events) >= 1
    expected = {alg: dict(bank) for alg, bank in rep.pcrs.items()}
    assert verify_pcrs(log, expected, replayed=rep).ok


@_SETTINGS
@given(log=st.sampled_from(CORPUS), data=st.data())
def test_truncated_logs(log: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(log)))
    _parse_or_error(log[:cut])


@_SETTINGS
@given(log=st.sampled_from(CORPUS), data=st.data())
def test_corrupted_logs(log: bytes, data: st.DataObject) -> None:
    blob = bytearray(log)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
        blob[at] = data.draw(st.integers(min_value=0, max_value=255))
    _parse_or_error(bytes(blob))


@_SETTINGS
@given(log=st.sampled_from(CORPUS), data=st.data())
def test_corrupted_headers(log: bytes, data: st.DataObject) -> None:
    # Hit the header fields (Spec ID, first record sizes) where most framing decisions are.
    blob = bytearray(log)
    at = data.draw(st.integers(min_value=0, max_value=min(len(blob), 120) - 1))
    blob[at] = data.draw(st.integers(min_value=0, max_value=255))
    _parse_or_error(bytes(blob))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes(blob: bytes) -> None:
    _parse_or_error(blob)
