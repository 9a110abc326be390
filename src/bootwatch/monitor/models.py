"""The monitor's tables (SQLAlchemy 2 declarative; schema changes only by migration).

Every table is prefixed ``monitor_`` so the embedded server can keep the
service's and the monitor's tables in one database; the monitor's Alembic
history is its own (version table ``alembic_version_monitor``).  JSON
documents (PCRs, events, diffs) are stored as text: they are written once
and read whole, never queried inside.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AlertRow",
    "BaselineRow",
    "BootDocumentRow",
    "BootRow",
    "MonitorBase",
    "OutcomeRow",
    "RecommendationRow",
    "ReportRow",
    "SuppressionRow",
    "VmRow",
    "WebhookDeliveryRow",
]

TZ = DateTime(timezone=True)


class MonitorBase(DeclarativeBase):
    pass


class VmRow(MonitorBase):
    __tablename__ = "monitor_vms"
    vm_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    group_name: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    #: the provider the VM is bound to: set by ``vm enable --provider``, else by the first
    #: outcome attributed to the VM; another provider's outcomes are history only
    provider: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    security_type: Mapped[str] = mapped_column(String(32), nullable=False)
    secure_boot: Mapped[str] = mapped_column(String(16), nullable=False)
    vtpm: Mapped[str] = mapped_column(String(16), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False)
    state: Mapped[str] = mapped_column(String(32), nullable=False)
    #: sort key: lower needs attention first (unhealthy 0 ... not_monitored 5)
    attention: Mapped[int] = mapped_column(Integer, nullable=False)
    state_reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    state_since: Mapped[datetime] = mapped_column(TZ, nullable=False)
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    enabled_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    last_outcome_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    last_verdict: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    last_boot_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_report_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    last_report_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_report_verified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    last_report_message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    last_failed_hop: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_failed_target: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    last_alive_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    agent_version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    boot_counter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    measured_secure_boot: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    is_windows: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    dbx_missing: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dbx_current: Mapped[int | None] = mapped_column(Integer, nullable=True)
    aik_not_after: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    open_alerts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: digest of the recommendation results this VM's recommendation rows hold (m0003):
    #: a refresh that evaluates the same results leaves the rows alone
    recommendations_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the token issuer of ``provider`` (the provider the VM is bound to) as its latest
    #: outcome carried it (m0005): a verified report counts only with a token from it
    issuer: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    #: the newest verified quote seen from the VM (m0006, monitor/freshness.py): its AIK's
    #: TPM name, resetCount and clock, and when the service answered it; a later answer
    #: whose quote is not newer is a replay or a rolled-back vTPM
    quote_aik: Mapped[str | None] = mapped_column(String(136), nullable=True)
    quote_reset_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quote_clock: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quote_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    #: token proof (m0007): the ``jti`` of the token the VM's latest outcome issued, the
    #: ``jti`` of the latest verified report's token, whether the two are the same token
    #: (the VM opened its latest attestation's answer), and since when (the monitor's
    #: clock) permits have come without such a proof
    last_token_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reported_token_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    last_proven: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    unproven_since: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    #: when the sweep took up this unproven stretch (alerted, or suppressed): once per
    #: stretch, so a dismissed alert does not reopen and a suppressed VM is not re-read
    unproven_alerted_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    #: the ``last_alive_at`` whose silence the stale sweep last evaluated: each silence
    #: (a ``last_alive_at`` older than the window) is taken up once; what it does not change
    #: by time (an unhealthy VM stays unhealthy) changes only through an event or an
    #: operator's action, which recompute the state themselves
    silence_checked_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)

    __table_args__ = (
        Index("ix_monitor_vms_attention", "attention", "vm_id"),
        Index("ix_monitor_vms_name", "name"),
        Index("ix_monitor_vms_state", "state", "attention", "vm_id"),
        Index("ix_monitor_vms_group", "group_name", "attention", "vm_id"),
        Index("ix_monitor_vms_provider", "provider", "attention", "vm_id"),
    )


class BootRow(MonitorBase):
    """One boot of one VM: identified by its quoted PCR values and TPM reset count.

    Its documents (events, claims) are in :class:`BootDocumentRow`: this row is
    updated by every repeated attestation and stays small (m0004)."""

    __tablename__ = "monitor_boots"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_id: Mapped[str] = mapped_column(String(128), nullable=False)
    boot_key: Mapped[str] = mapped_column(String(64), nullable=False)
    #: UINT32 (m0006 widened it: a key outside the endorsement hierarchy quotes it offset)
    reset_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pcr_bank: Mapped[str] = mapped_column(String(16), nullable=False)
    pcrs: Mapped[str] = mapped_column(Text, nullable=False)
    verdict: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    policy_hash: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    baseline_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    agent_version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    first_seen: Mapped[datetime] = mapped_column(TZ, nullable=False)
    last_seen: Mapped[datetime] = mapped_column(TZ, nullable=False)
    __table_args__ = (
        UniqueConstraint("vm_id", "boot_key", name="uq_monitor_boots_vm_key"),
        Index("ix_monitor_boots_vm", "vm_id", "id"),
        Index("ix_monitor_boots_seen", "last_seen"),
    )


class BootDocumentRow(MonitorBase):
    """A boot's quoted PCRs' events and the claims the policy saw (JSON), written once
    when the boot is first seen; read for a diff, a new baseline or a policy dry run."""

    __tablename__ = "monitor_boot_documents"
    boot_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    events: Mapped[str] = mapped_column(Text, nullable=False)
    claims: Mapped[str] = mapped_column(Text, nullable=False)


class OutcomeRow(MonitorBase):
    """One ingested outcome event; its id makes ingestion idempotent."""

    __tablename__ = "monitor_outcomes"
    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    vm_id: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    time: Mapped[datetime] = mapped_column(TZ, nullable=False)
    received_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    provider: Mapped[str] = mapped_column(String(128), nullable=False)
    verdict: Mapped[str] = mapped_column(String(32), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    failed_check: Mapped[str | None] = mapped_column(String(64), nullable=True)
    boot_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (Index("ix_monitor_outcomes_vm", "vm_id", "time"),)


class ReportRow(MonitorBase):
    """One agent health report; ``verified`` when its token verified."""

    __tablename__ = "monitor_reports"
    report_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    vm_id: Mapped[str] = mapped_column(String(128), nullable=False)
    received_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    verified: Mapped[bool] = mapped_column(Boolean, nullable=False)
    why_unverified: Mapped[str] = mapped_column(Text, nullable=False, default="")
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    failed_hop: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agent_version: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    boot_counter: Mapped[int | None] = mapped_column(Integer, nullable=True)
    __table_args__ = (Index("ix_monitor_reports_vm", "vm_id", "received_at"),)


class BaselineRow(MonitorBase):
    """An approved boot variant for one VM (or, with ``group_name``, for a group)."""

    __tablename__ = "monitor_baselines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    group_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    label: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    origin: Mapped[str] = mapped_column(String(32), nullable=False)  # learned | approved
    pcrs: Mapped[str] = mapped_column(Text, nullable=False)
    events: Mapped[str] = mapped_column(Text, nullable=False)
    source_boot_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    created_by: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    __table_args__ = (
        Index("ix_monitor_baselines_vm", "vm_id"),
        Index("ix_monitor_baselines_group", "group_name"),
    )


class AlertRow(MonitorBase):
    """An alert; at most one open (active/in_progress) per correlation key."""

    __tablename__ = "monitor_alerts"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vm_id: Mapped[str] = mapped_column(String(128), nullable=False)
    alert_type: Mapped[str] = mapped_column(String(64), nullable=False)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    severity: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    correlation_key: Mapped[str] = mapped_column(String(256), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    remediation: Mapped[str] = mapped_column(Text, nullable=False)
    extended: Mapped[str] = mapped_column(Text, nullable=False)
    diff: Mapped[str] = mapped_column(Text, nullable=False)
    boot_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    start_time: Mapped[datetime] = mapped_column(TZ, nullable=False)
    last_seen: Mapped[datetime] = mapped_column(TZ, nullable=False)
    end_time: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    status_changed_by: Mapped[str] = mapped_column(String(128), nullable=False, default="")
    __table_args__ = (
        Index("ix_monitor_alerts_vm", "vm_id", "status"),
        Index("ix_monitor_alerts_corr", "correlation_key", "status"),
        Index("ix_monitor_alerts_status", "status", "start_time"),
    )


class SuppressionRow(MonitorBase):
    """A rule that keeps alerts of ``reason`` (all when empty) for a VM or group quiet."""

    __tablename__ = "monitor_suppressions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vm_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    group_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    created_by: Mapped[str] = mapped_column(String(128), nullable=False, default="")


class RecommendationRow(MonitorBase):
    __tablename__ = "monitor_recommendations"
    vm_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    severity: Mapped[str] = mapped_column(String(16), nullable=False)
    code: Mapped[str] = mapped_column(String(16), nullable=False)
    cause: Mapped[str] = mapped_column(String(64), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    remediation: Mapped[str] = mapped_column(Text, nullable=False)
    first_evaluated: Mapped[datetime] = mapped_column(TZ, nullable=False)
    status_changed: Mapped[datetime] = mapped_column(TZ, nullable=False)
    __table_args__ = (
        Index("ix_monitor_recs_key", "key", "code"),
        Index("ix_monitor_recs_code", "code", "key"),
    )


class WebhookDeliveryRow(MonitorBase):
    """The webhook outbox: written in the same transaction as the alert change."""

    __tablename__ = "monitor_webhook_deliveries"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(TZ, nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(TZ, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    __table_args__ = (Index("ix_monitor_webhooks_due", "delivered_at", "next_attempt_at"),)
