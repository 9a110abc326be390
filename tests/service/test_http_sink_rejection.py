"""Review of the outbox's sinks: what the relay clears must have been delivered.

The relay clears a whole batch from the outbox when the sink raises
``EventRejectedError`` (retrying cannot help).  So a sink that splits a batch must
not raise it before every other part of the batch was delivered: the events of a
part that was never sent would be cleared, and the monitor would never see them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bwservers import serve_monitor
from sqlalchemy import select

from bootwatch.errors import EventRejectedError
from bootwatch.monitor.container import MonitorContainer
from bootwatch.monitor.models import OutcomeRow
from bootwatch.protocol.outcome import OutcomeEvent, Verdict, encode_outcome
from bootwatch.service import events as events_mod
from bootwatch.service.events import HttpEventSink

TOKEN = "review-outbox-admin-token-0123456789abcdef"


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[tuple[str, MonitorContainer]]:
    with serve_monitor(tmp_path, TOKEN) as served:
        yield served


def _events(n: int) -> list[OutcomeEvent]:
    now = datetime.now(UTC)
    return [OutcomeEvent(
        event_id=uuid.uuid4().hex, time=now + timedelta(microseconds=i), provider="shared",
        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="permitted",
        policy_hash="h" * 43, vm_id=str(uuid.UUID(int=i + 1)).upper(), pcrs={4: "ab" * 32},
        reset_count=1, secure_boot=True) for i in range(n)]


def _stored(c: MonitorContainer) -> set[str]:
    with c.monitor.read() as s:
        return set(s.scalars(select(OutcomeRow.event_id)))


def test_a_rejected_part_does_not_drop_the_parts_never_sent(
        monitor: tuple[str, MonitorContainer], monkeypatch: pytest.MonkeyPatch) -> None:
    """Nine events, three to a request; one of them has a reason longer than the monitor
    reads, so its request is refused (400).  The sink says "rejected", and the relay clears
    all nine: every other event must be in the monitor by then, those of the requests
    after the refused one included."""
    url, c = monitor
    events = _events(9)
    bodies = [encode_outcome(e) for e in events]
    # refused by the monitor's decoder (encode_outcome clips a reason this long, so the
    # body is written by hand, as a peer with another encoder might)
    doc = json.loads(bodies[4])
    doc["reason"] = "x" * 5000
    bodies[4] = json.dumps(doc, separators=(",", ":")).encode()
    # three events of the usual size per request; the long one goes alone
    monkeypatch.setattr(events_mod, "MAX_POST_BYTES", 3 * (len(bodies[0]) + 1))
    sink = HttpEventSink(url, token=TOKEN)
    try:
        with pytest.raises(EventRejectedError):
            sink.deliver(events, bodies)
    finally:
        sink.close()
    stored = _stored(c)
    sent_ok = {e.event_id for e in events[:4] + events[5:]}
    assert sent_ok <= stored, f"{len(sent_ok - stored)} events cleared but never delivered"


def test_a_monitor_trickling_its_answer_is_cut_off_and_retried() -> None:
    """httpx bounds each read: a monitor (or whatever answers at its address) sending its
    answer's headers a byte at a time held the relay, and every outcome behind it, for
    ever.  The post is cut off after 3 x timeout, a failure the relay retries (not a
    rejection that would clear the batch)."""
    from bwtrickle import Trickler

    from bootwatch.errors import EventDeliveryError

    slow = Trickler(gap=0.1, lasts=60, head=True)
    sink = HttpEventSink(f"http://127.0.0.1:{slow.port}", token=TOKEN, timeout=0.5)
    try:
        with pytest.raises(EventDeliveryError) as caught:
            sink.deliver(_events(2))
    finally:
        sink.close()
        slow.close()
    assert not isinstance(caught.value, EventRejectedError)
    assert "no answer within 1.5 s" in str(caught.value)
    assert slow.sent < 100
