"""Review of the scale-out machinery against issue 15, with the real services: the
outbox relay delivering to real NATS JetStream from a real SQLite database.

What must hold: one event the sink cannot take does not hold back every other
event behind it (the relay's hand-off queue and its sweep both deliver in order).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from sqlalchemy import func, select

from bootwatch.protocol.outcome import OutcomeEvent, Verdict, encode_outcome
from bootwatch.protocol.verdict import Verdict as RecordVerdict
from bootwatch.service.db import Database, make_engine, run_migrations
from bootwatch.service.events_nats import JetStreamSink
from bootwatch.service.models import AttestationRecordRow
from bootwatch.service.outbox import EventRelay
from bootwatch.service.records import AttestationRecord, RecordWriter
from bootwatch.service.settings import Settings

from .conftest import NATS_URL, Names

pytestmark = [pytest.mark.nats]



async def _stream_messages(stream: str) -> int:
    nc = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
    try:
        try:
            info = await nc.jetstream().stream_info(stream)
        except nats.js.errors.NotFoundError:
            return 0
        return int(info.state.messages)
    finally:
        await nc.close()


@pytest.fixture
def service_db(tmp_path: Path) -> Iterator[Database]:
    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    run_migrations(engine)
    yield Database(engine)
    engine.dispose()


def deny_event(i: int) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=uuid.uuid4().hex, time=datetime.now(UTC) + timedelta(microseconds=i),
        provider="shared", attestation_type="AzureGuest", verdict=Verdict.DENY,
        reason="policy denied", policy_hash="h" * 43, failed_check="policy",
        deciding_rule="rule-1", vm_id=str(uuid.UUID(int=i + 1)).upper(),
        pcrs={0: "ab" * 32, 7: "cd" * 32}, reset_count=1, secure_boot=True,
    )


def too_large_for_nats(i: int) -> OutcomeEvent:
    """An event under the outcome limit (2 MiB) but over NATS' default max_payload (1 MiB),
    compressed too (random claims: the sink compresses an event over the limit)."""
    big = replace(deny_event(i), claims=tuple(
        (f"c{j}", base64.b64encode(os.urandom(2250)).decode()) for j in range(600)))
    assert 1024 * 1024 < len(encode_outcome(big)) < 2 * 1024 * 1024
    return big


def outbox_left(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(AttestationRecordRow)
                            .where(AttestationRecordRow.outcome_event.is_not(None))) or 0)


def wait_for(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return bool(cond())


def test_one_event_jetstream_cannot_take_does_not_stall_the_others(
        names: Names, service_db: Database, tmp_path: Path) -> None:
    """Twenty answered attestations, the third with an outcome event too large for the
    NATS server.  The other nineteen must reach the stream: before, the sink refused the
    whole batch as "not delivered", the relay put it back first in line, and no event
    of this or any later attestation was ever published."""
    sink = JetStreamSink(NATS_URL, stream=names.stream, subject=names.subject, timeout=5.0)
    relay = EventRelay(service_db, sink, orphan_after=3600.0)
    writer = RecordWriter(service_db, Settings(data_dir=tmp_path), on_commit=relay.committed)
    relay.start()
    events = [too_large_for_nats(i) if i == 2 else deny_event(i) for i in range(20)]
    try:
        for ev in events:
            commit = writer.submit(AttestationRecord(
                provider="shared", attestation_type="AzureGuest", verdict=RecordVerdict.DENY,
                reason="policy denied", vm_id=ev.vm_id, outcome=ev))
            assert commit.wait_sync(10) and commit.error is None
        delivered = wait_for(lambda: asyncio.run(_stream_messages(names.stream)) >= 19, 15.0)
        assert delivered, (f"{asyncio.run(_stream_messages(names.stream))} of 19 events "
                           "published; the relay is stuck on the one NATS cannot take")
        assert wait_for(lambda: outbox_left(service_db) == 0, 10.0)
    finally:
        writer.close()
        relay.close(timeout=2.0)
        sink.close()
