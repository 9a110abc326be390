"""Attestation records: one row per attestation request.

Public API (stable names) for the attestation handlers:

* :class:`AttestationRecord` -- what to store: ``provider``, ``attestation_type``,
  ``verdict`` (:class:`Verdict`: permit/deny/error), ``reason``, ``vm_id``,
  ``policy_hash``, ``evidence`` (raw request bytes; kept only for
  ``Settings.evidence_retention_seconds``).
* :func:`record_attestation` ``(request, record)`` -- store it (synchronous:
  call it from a ``def`` handler or through ``run_in_threadpool``) and count
  the verdict in the ``bootwatch_attestation_verdicts_total`` metric.
* :func:`purge_expired_evidence` -- drop evidence past its retention (run by
  the app periodically and by ``bootwatch service purge``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import update
from starlette.requests import Request

from bootwatch.service.db import utcnow
from bootwatch.service.models import AttestationRecordRow

if TYPE_CHECKING:
    from bootwatch.service.state import ServiceState

MAX_REASON = 4000


class Verdict(StrEnum):
    PERMIT = "permit"
    DENY = "deny"
    ERROR = "error"


@dataclass(frozen=True)
class AttestationRecord:
    provider: str
    attestation_type: str
    verdict: Verdict
    reason: str = ""
    vm_id: str | None = None
    policy_hash: str | None = None
    evidence: bytes | None = None


def store_record(
    state: ServiceState, record: AttestationRecord, now: datetime | None = None
) -> int:
    """Insert one record; evidence is dropped when retention is 0. Returns the row id."""
    now = now or utcnow()
    retention = state.settings.evidence_retention_seconds
    keep = record.evidence is not None and retention > 0
    row = AttestationRecordRow(
        provider=record.provider,
        created_at=now,
        attestation_type=record.attestation_type,
        vm_id=record.vm_id[:128] if record.vm_id else None,
        verdict=Verdict(record.verdict).value,
        reason=record.reason[:MAX_REASON],
        policy_hash=record.policy_hash,
        evidence=record.evidence if keep else None,
        evidence_expires_at=now + timedelta(seconds=retention) if keep else None,
    )
    with state.db.session() as s:
        s.add(row)
        s.flush()
        return int(row.id)


def record_attestation(request: Request, record: AttestationRecord) -> int:
    """Store ``record`` for the app serving ``request`` and count its verdict."""
    state: ServiceState = request.app.state.bw
    row_id = store_record(state, record)
    metrics = getattr(request.app.state, "bw_metrics", None)
    if metrics is not None:
        metrics.verdicts.labels(record.provider, Verdict(record.verdict).value).inc()
    return row_id


def purge_expired_evidence(state: ServiceState, now: datetime | None = None) -> int:
    """Null out evidence whose retention ended; returns how many rows were purged."""
    now = now or utcnow()
    with state.db.session() as s:
        result = s.execute(
            update(AttestationRecordRow)
            .where(
                AttestationRecordRow.evidence_expires_at.is_not(None),
                AttestationRecordRow.evidence_expires_at <= now,
            )
            .values(evidence=None, evidence_expires_at=None)
        )
        return int(getattr(result, "rowcount", 0) or 0)
