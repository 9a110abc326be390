"""Quote freshness: each VM's newest verified quote (monitor/freshness.py).

``monitor_vms`` gains the high-water mark of the VM's quotes: the AIK's TPM name, the
quote's resetCount and clock, and when the service answered it.  Existing VMs start with
no mark (their next verified quote sets it).  ``monitor_boots.reset_count`` becomes a
64-bit column: resetCount is a UINT32, and a key outside the endorsement hierarchy
quotes it offset by a per-key constant, so values above 2^31 - 1 are real.

Revision ID: m0006
Revises: m0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m0006"
down_revision = "m0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_vms") as batch:
        batch.add_column(sa.Column("quote_aik", sa.String(length=136), nullable=True))
        batch.add_column(sa.Column("quote_reset_count", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("quote_clock", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("quote_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("monitor_boots") as batch:
        batch.alter_column("reset_count", existing_type=sa.Integer(),
                           type_=sa.BigInteger(), existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("monitor_boots") as batch:
        batch.alter_column("reset_count", existing_type=sa.BigInteger(),
                           type_=sa.Integer(), existing_nullable=True)
    with op.batch_alter_table("monitor_vms") as batch:
        batch.drop_column("quote_at")
        batch.drop_column("quote_clock")
        batch.drop_column("quote_reset_count")
        batch.drop_column("quote_aik")
