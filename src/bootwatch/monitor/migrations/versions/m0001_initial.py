"""Initial monitor schema: VMs, boots, outcomes, reports, baselines, alerts,
suppressions, recommendations, the webhook outbox.

Revision ID: m0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_alerts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("vm_id", sa.String(length=128), nullable=False),
        sa.Column("alert_type", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("correlation_key", sa.String(length=256), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("remediation", sa.Text(), nullable=False),
        sa.Column("extended", sa.Text(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.Column("boot_id", sa.Integer(), nullable=True),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_changed_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_monitor_alerts_corr", "monitor_alerts", ["correlation_key", "status"], unique=False
    )
    op.create_index(
        "ix_monitor_alerts_status", "monitor_alerts", ["status", "start_time"], unique=False
    )
    op.create_index("ix_monitor_alerts_vm", "monitor_alerts", ["vm_id", "status"], unique=False)
    op.create_table(
        "monitor_baselines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vm_id", sa.String(length=128), nullable=True),
        sa.Column("group_name", sa.String(length=128), nullable=True),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.Column("pcrs", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("source_boot_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_monitor_baselines_group", "monitor_baselines", ["group_name"], unique=False)
    op.create_index("ix_monitor_baselines_vm", "monitor_baselines", ["vm_id"], unique=False)
    op.create_table(
        "monitor_boots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vm_id", sa.String(length=128), nullable=False),
        sa.Column("boot_key", sa.String(length=64), nullable=False),
        sa.Column("reset_count", sa.Integer(), nullable=True),
        sa.Column("pcr_bank", sa.String(length=16), nullable=False),
        sa.Column("pcrs", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("claims", sa.Text(), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("policy_hash", sa.String(length=128), nullable=False),
        sa.Column("baseline_id", sa.Integer(), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("vm_id", "boot_key", name="uq_monitor_boots_vm_key"),
    )
    op.create_index("ix_monitor_boots_seen", "monitor_boots", ["last_seen"], unique=False)
    op.create_index("ix_monitor_boots_vm", "monitor_boots", ["vm_id", "id"], unique=False)
    op.create_table(
        "monitor_outcomes",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("vm_id", sa.String(length=128), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("failed_check", sa.String(length=64), nullable=True),
        sa.Column("boot_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index("ix_monitor_outcomes_vm", "monitor_outcomes", ["vm_id", "time"], unique=False)
    op.create_table(
        "monitor_recommendations",
        sa.Column("vm_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("cause", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("remediation", sa.Text(), nullable=False),
        sa.Column("first_evaluated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_changed", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vm_id", "key"),
    )
    op.create_index("ix_monitor_recs_key", "monitor_recommendations", ["key", "code"], unique=False)
    op.create_table(
        "monitor_reports",
        sa.Column("report_id", sa.String(length=128), nullable=False),
        sa.Column("vm_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("why_unverified", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("failed_hop", sa.String(length=32), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("boot_counter", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("report_id"),
    )
    op.create_index(
        "ix_monitor_reports_vm", "monitor_reports", ["vm_id", "received_at"], unique=False
    )
    op.create_table(
        "monitor_suppressions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vm_id", sa.String(length=128), nullable=True),
        sa.Column("group_name", sa.String(length=128), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "monitor_vms",
        sa.Column("vm_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("group_name", sa.String(length=128), nullable=False),
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("security_type", sa.String(length=32), nullable=False),
        sa.Column("secure_boot", sa.String(length=16), nullable=False),
        sa.Column("vtpm", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("attention", sa.Integer(), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=False),
        sa.Column("state_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_verdict", sa.String(length=32), nullable=True),
        sa.Column("last_reason", sa.Text(), nullable=False),
        sa.Column("last_boot_id", sa.Integer(), nullable=True),
        sa.Column("last_report_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_report_status", sa.String(length=32), nullable=True),
        sa.Column("last_report_verified", sa.Boolean(), nullable=False),
        sa.Column("last_report_message", sa.Text(), nullable=False),
        sa.Column("last_failed_hop", sa.String(length=32), nullable=True),
        sa.Column("last_failed_target", sa.String(length=512), nullable=False),
        sa.Column("last_alive_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("boot_counter", sa.Integer(), nullable=True),
        sa.Column("measured_secure_boot", sa.Boolean(), nullable=True),
        sa.Column("is_windows", sa.Boolean(), nullable=True),
        sa.Column("dbx_missing", sa.Integer(), nullable=True),
        sa.Column("dbx_current", sa.Integer(), nullable=True),
        sa.Column("aik_not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("open_alerts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("vm_id"),
    )
    op.create_index("ix_monitor_vms_attention", "monitor_vms", ["attention", "vm_id"], unique=False)
    op.create_index("ix_monitor_vms_group", "monitor_vms", ["group_name", "vm_id"], unique=False)
    op.create_index("ix_monitor_vms_name", "monitor_vms", ["name"], unique=False)
    op.create_index("ix_monitor_vms_state", "monitor_vms", ["state", "vm_id"], unique=False)
    op.create_table(
        "monitor_webhook_deliveries",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_monitor_webhooks_due",
        "monitor_webhook_deliveries",
        ["delivered_at", "next_attempt_at"],
        unique=False,
    )
    # ### end Alembic commands ###


def downgrade() -> None:
    op.drop_index("ix_monitor_webhooks_due", table_name="monitor_webhook_deliveries")
    op.drop_table("monitor_webhook_deliveries")
    op.drop_index("ix_monitor_vms_state", table_name="monitor_vms")
    op.drop_index("ix_monitor_vms_name", table_name="monitor_vms")
    op.drop_index("ix_monitor_vms_group", table_name="monitor_vms")
    op.drop_index("ix_monitor_vms_attention", table_name="monitor_vms")
    op.drop_table("monitor_vms")
    op.drop_table("monitor_suppressions")
    op.drop_index("ix_monitor_reports_vm", table_name="monitor_reports")
    op.drop_table("monitor_reports")
    op.drop_index("ix_monitor_recs_key", table_name="monitor_recommendations")
    op.drop_table("monitor_recommendations")
    op.drop_index("ix_monitor_outcomes_vm", table_name="monitor_outcomes")
    op.drop_table("monitor_outcomes")
    op.drop_index("ix_monitor_boots_vm", table_name="monitor_boots")
    op.drop_index("ix_monitor_boots_seen", table_name="monitor_boots")
    op.drop_table("monitor_boots")
    op.drop_index("ix_monitor_baselines_vm", table_name="monitor_baselines")
    op.drop_index("ix_monitor_baselines_group", table_name="monitor_baselines")
    op.drop_table("monitor_baselines")
    op.drop_index("ix_monitor_alerts_vm", table_name="monitor_alerts")
    op.drop_index("ix_monitor_alerts_status", table_name="monitor_alerts")
    op.drop_index("ix_monitor_alerts_corr", table_name="monitor_alerts")
    op.drop_table("monitor_alerts")
    # ### end Alembic commands ###
