"""One verdict vocabulary (protocol/verdict.py): records said ``error`` where the
pipeline said ``invalid`` and outcome events ``evidence_rejected``; the column is
widened for the longer name and the old rows renamed.

Revision ID: 0006_one_verdict_vocabulary
Revises: 0005_outcome_outbox
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_one_verdict_vocabulary"
down_revision = "0005_outcome_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attestation_records") as batch:
        batch.alter_column("verdict", type_=sa.String(32), existing_type=sa.String(16),
                           existing_nullable=False)
    op.execute("UPDATE attestation_records SET verdict = 'evidence_rejected' "
               "WHERE verdict = 'error'")


def downgrade() -> None:
    op.execute("UPDATE attestation_records SET verdict = 'error' "
               "WHERE verdict = 'evidence_rejected'")
    with op.batch_alter_table("attestation_records") as batch:
        batch.alter_column("verdict", type_=sa.String(16), existing_type=sa.String(32),
                           existing_nullable=False)
