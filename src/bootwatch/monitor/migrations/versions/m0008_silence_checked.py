"""Stale sweep: each VM's silence is evaluated once (monitor_vms.silence_checked_at).

The sweep took the enabled VMs silent past the stale window and not yet stale, 5,000 at a
time in no order; a silent VM that is unhealthy stays so (unhealthy outranks stale), so
it was selected on every sweep, and past 5,000 such VMs (denied VMs deleted while still
enabled) no other VM ever went stale (found in an audit).  Existing VMs start unchecked:
the first sweep takes each silent one up once.

Revision ID: m0008
Revises: m0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m0008"
down_revision = "m0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_vms") as batch:
        batch.add_column(sa.Column("silence_checked_at", sa.DateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("monitor_vms") as batch:
        batch.drop_column("silence_checked_at")
