"""The HTTP event sink against a real monitor on loopback: the encodings it is handed are
sent as they are, and a batch larger than one request may hold is split into several
requests (a single oversized request would be refused with 400, and the relay drops a
refused batch), every event stored once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bwservers import serve_monitor
from sqlalchemy import func, select

from bootwatch.errors import EventRejectedError
from bootwatch.monitor.container import MonitorContainer
from bootwatch.monitor.models import OutcomeRow
from bootwatch.protocol.outcome import (
    BootEvent,
    OutcomeEvent,
    Verdict,
    encode_outcome,
    outcome_to_json,
)
from bootwatch.service import events as events_mod
from bootwatch.service.events import HttpEventSink

TOKEN = "http-sink-admin-token-0123456789abcdef"


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[tuple[str, MonitorContainer]]:
    with serve_monitor(tmp_path, TOKEN) as served:
        yield served


def _events(n: int) -> list[OutcomeEvent]:
    boot = tuple(BootEvent(i, 4, "EV_EFI_BOOT_SERVICES_APPLICATION", f"{i:064x}",
                           "x" * 500) for i in range(20))
    now = datetime.now(UTC)
    return [OutcomeEvent(
        event_id=uuid.uuid4().hex, time=now + timedelta(microseconds=i), provider="shared",
        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="permitted",
        policy_hash="h" * 43, vm_id=str(uuid.UUID(int=i + 1)).upper(), pcrs={4: "ab" * 32},
        events=boot, reset_count=1, secure_boot=True) for i in range(n)]


def _stored(c: MonitorContainer) -> int:
    with c.monitor.read() as s:
        return int(s.scalar(select(func.count()).select_from(OutcomeRow)) or 0)


def test_a_large_batch_is_split_and_every_event_stored_once(
        monitor: tuple[str, MonitorContainer], monkeypatch: pytest.MonkeyPatch) -> None:
    url, c = monitor
    events = _events(12)
    bodies = [encode_outcome(e) for e in events]
    limit = 3 * len(bodies[0]) + 10  # three events per request
    monkeypatch.setattr(events_mod, "MAX_POST_BYTES", limit)
    sink = HttpEventSink(url, token=TOKEN)
    sizes: list[int] = []
    real = sink._post

    def counted(chunk: list[bytes]) -> None:
        sizes.append(sum(len(b) + 1 for b in chunk))
        real(chunk)

    sink._post = counted  # type: ignore[method-assign]
    try:
        sink.deliver(events, bodies)
        sink.deliver(events[:5], bodies[:5])  # a relay retrying part of it: stored once
    finally:
        sink.close()
    assert len(sizes) == 4 + 2 and all(size <= limit for size in sizes)
    assert _stored(c) == 12


def test_given_encodings_are_sent_as_they_are(monitor: tuple[str, MonitorContainer]) -> None:
    """The sink sends the bodies it is handed, not a new encoding of the events: bodies
    of other events (laid out unlike encode_outcome's compact form) are what the monitor
    stores."""
    url, c = monitor
    events, others = _events(3), _events(3)
    bodies = [json.dumps(outcome_to_json(e), indent=2).encode() for e in others]
    sink = HttpEventSink(url, token=TOKEN)
    try:
        sink.deliver(events, bodies)
    finally:
        sink.close()
    with c.monitor.read() as s:
        stored = set(s.scalars(select(OutcomeRow.event_id)))
    assert stored == {e.event_id for e in others}


def test_one_event_the_monitor_refuses_costs_only_itself(
        monitor: tuple[str, MonitorContainer]) -> None:
    """The monitor stores nothing of a request holding one bad event, and the relay drops
    a refused batch: before, every other event of that request was lost with it."""
    url, c = monitor
    events = _events(7)
    bodies = [encode_outcome(e) for e in events]
    bad = outcome_to_json(events[3])
    bad["pcrs"] = {"4": "not hex"}
    bodies[3] = json.dumps(bad).encode()
    sink = HttpEventSink(url, token=TOKEN)
    try:
        with pytest.raises(EventRejectedError, match="400"):
            sink.deliver(events, bodies)
    finally:
        sink.close()
    with c.monitor.read() as s:
        stored = set(s.scalars(select(OutcomeRow.event_id)))
    assert stored == {e.event_id for i, e in enumerate(events) if i != 3}
