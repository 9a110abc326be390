"""One outcome event the monitor's database refuses does not hold back the others.

The service's relay retries a failed batch first in line, for ever: before, one event
with a value no column holds (found in review: a TPM clock past 2^63) stalled every later
outcome of the fleet, in-process, on SQLite (OverflowError, not even a BootwatchError)
and on PostgreSQL (DataError).  The sink now splits such a batch and drops only the event
refused alone; the database being away is still the whole batch's to retry.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from bootwatch.errors import EventDeliveryError, StorageError
from bootwatch.monitor.core import Monitor
from bootwatch.monitor.metrics import MonitorMetrics
from bootwatch.monitor.models import OutcomeRow
from bootwatch.monitor.settings import MonitorSettings
from bootwatch.monitor.sink import InProcessSink
from bootwatch.protocol.outcome import OutcomeEvent, Verdict

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


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
