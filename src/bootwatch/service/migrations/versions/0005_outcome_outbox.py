"""The outcome-event outbox: each attestation record keeps its encoded outcome event
until the event relay has handed it to the sink (then it is set to NULL), so an
answered attestation's event survives a crash of the process that answered it.

Revision ID: 0005_outcome_outbox
Revises: 0004_enrollment
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_outcome_outbox"
down_revision = "0004_enrollment"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attestation_records") as batch:
        batch.add_column(sa.Column("outcome_event", sa.LargeBinary, nullable=True))
    # only the undelivered rows are indexed: the relay's sweep reads nothing else
    op.create_index(
        "ix_records_outcome_pending", "attestation_records", ["id"],
        sqlite_where=sa.text("outcome_event IS NOT NULL"),
        postgresql_where=sa.text("outcome_event IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_records_outcome_pending", table_name="attestation_records")
    with op.batch_alter_table("attestation_records") as batch:
        batch.drop_column("outcome_event")
