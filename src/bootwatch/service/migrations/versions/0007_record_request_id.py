"""Every attestation record carries the request id its answer named
(``x-bootwatch-request-id``; the outcome event's ``event_id`` is the same id), so an
operator, and the durability tests, can match an answer to its record.

Revision ID: 0007_record_request_id
Revises: 0006_one_verdict_vocabulary
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_record_request_id"
down_revision = "0006_one_verdict_vocabulary"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attestation_records") as batch:
        batch.add_column(sa.Column("request_id", sa.String(36), nullable=True))
        batch.create_index("ix_attestation_records_request_id", ["request_id"])


def downgrade() -> None:
    with op.batch_alter_table("attestation_records") as batch:
        batch.drop_index("ix_attestation_records_request_id")
        batch.drop_column("request_id")
