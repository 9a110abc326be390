"""Token proof: which token a VM's latest outcome issued and its latest report carried.

A permitted attestation's token is sealed to an ephemeral key that only the quoted
boot's PCRs unlock; the agent opens it and sends it back in its health report.  The
same ``jti`` on both sides proves the VM's PCRs were the quoted ones when it reported
(docs/monitor.md, "Token proof").  Existing VMs start unproven, with no token known.

Revision ID: m0007
Revises: m0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m0007"
down_revision = "m0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_vms") as batch:
        batch.add_column(sa.Column("last_token_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("reported_token_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("last_proven", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("unproven_since", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("unproven_alerted_at", sa.DateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_vms") as batch:
        batch.drop_column("unproven_alerted_at")
        batch.drop_column("unproven_since")
        batch.drop_column("last_proven")
        batch.drop_column("reported_token_id")
        batch.drop_column("last_token_id")
