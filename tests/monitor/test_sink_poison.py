"""One outcome event the monitor's database refuses does not hold back the others.

The service's relay retries a failed batch first in line, for ever: before, one event
with a value no column holds (found in review: a TPM clock past 2^63) stalled every later
outcome of the fleet, in-process, on SQLite (OverflowError, not even a BootwatchError)
and on PostgreSQL (DataError); over HTTP the monitor answered 5xx, which the HTTP sink
retries for ever too.  Such a batch is now split and only the event refused alone is
left out; the database being away is still the whole batch's to retry.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from bwservers import serve_monitor
from sqlalchemy import Engine, select
from sqlalchemy.exc import DataError, OperationalError

from bootwatch.errors import EventDeliveryError, StorageError
from bootwatch.monitor.core import Monitor
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import OutcomeRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.sink import InProcessSink
from bootwatch.protocol.outcome import OutcomeEvent, Verdict, encode_outcome

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TOKEN = "poison-admin-token-0123456789abcdef"


def _ev(i: int, reset: int = 1) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=f"e{i}", time=T0 + timedelta(seconds=i), provider="default",
        attestation_type="AzureGuest", verdict=Verdict.PERMIT, reason="ok",
        policy_hash="h" * 43, vm_id=str(uuid.UUID(int=100 + i)).upper(),
        pcrs={0: "00" * 32}, reset_count=reset, secure_boot=True)


def _stored(m: Monitor) -> list[str]:
    with m.read() as s:
        return sorted(s.scalars(select(OutcomeRow.event_id)))


def test_an_event_the_database_refuses_is_dropped_alone(engines: list[Engine]) -> None:
    m = Monitor(engines[0], MonitorSettings(), metrics=MonitorMetrics(),
                clock=lambda: T0 + timedelta(hours=1))
    batch = [_ev(1), _ev(2), _ev(3, reset=2**70), _ev(4), _ev(5)]
    InProcessSink(m).deliver(batch)
    assert _stored(m) == ["e1", "e2", "e4", "e5"]


def test_the_database_away_is_still_retried_whole(engines: list[Engine],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    m = Monitor(engines[0], MonitorSettings(), metrics=MonitorMetrics())

    def away(events: object) -> list[bool]:
        cause = OperationalError("SELECT 1", {}, Exception("connection refused"))
        raise StorageError("monitor database error: OperationalError") from cause

    monkeypatch.setattr(m, "ingest_outcomes", away)
    with pytest.raises(EventDeliveryError, match="could not store"):
        InProcessSink(m).deliver([_ev(1), _ev(2)])


def test_the_http_route_stores_the_rest_and_names_what_it_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /api/v1/outcomes answered 503 for a batch with such an event: the service's
    HTTP sink retried it for ever.  Now 202, the others stored, the refused one named."""
    with serve_monitor(tmp_path, TOKEN) as (url, c):
        real = c.monitor.ingest_outcomes

        def refusing(batch: Any) -> list[bool]:
            if any(e.event_id == "e3" for e in batch):
                cause = DataError("INSERT", {}, Exception("value out of range"))
                raise StorageError("monitor database error: DataError") from cause
            return real(batch)

        monkeypatch.setattr(c.monitor, "ingest_outcomes", refusing)
        body = b'{"events":[' + b",".join(encode_outcome(_ev(i)) for i in range(1, 6)) + b"]}"
        r = httpx.post(f"{url}/api/v1/outcomes", content=body,
                       headers={"Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 202, r.text
        assert r.json() == {"stored": [True, True, False, True, True], "refused": ["e3"]}
        assert _stored(c.monitor) == ["e1", "e2", "e4", "e5"]
