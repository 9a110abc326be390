"""Hardening (issue 9): who changed signers, replay bookkeeping, evidence quota columns.

* ``signers``: ``added_by`` / ``removed_by`` (the authorised principal) and the hash of
  the signed JWS that added / removed the certificate (a replayed JWS is recognised).
* ``policies``: ``rollback`` (the write re-applied an earlier document, asked for
  explicitly with ``allowRollback=true``).
* ``attestation_records``: ``client`` (the address the request came from) and
  ``evidence_bytes`` (size of the kept evidence), for the per-client and total
  evidence quota.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("signers") as b:
        b.add_column(sa.Column("added_by", sa.String(255), nullable=True))
        b.add_column(sa.Column("removed_by", sa.String(255), nullable=True))
        b.add_column(sa.Column("added_jws_hash", sa.String(64), nullable=True))
        b.add_column(sa.Column("removed_jws_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("policies") as b:
        b.add_column(
            sa.Column("rollback", sa.Boolean, nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("attestation_records") as b:
        b.add_column(sa.Column("client", sa.String(64), nullable=True))
        b.add_column(sa.Column("evidence_bytes", sa.Integer, nullable=True))
    op.create_index("ix_records_client_id", "attestation_records", ["client", "id"])


def downgrade() -> None:
    op.drop_index("ix_records_client_id", table_name="attestation_records")
    with op.batch_alter_table("attestation_records") as b:
        b.drop_column("evidence_bytes")
        b.drop_column("client")
    with op.batch_alter_table("policies") as b:
        b.drop_column("rollback")
    with op.batch_alter_table("signers") as b:
        b.drop_column("removed_jws_hash")
        b.drop_column("added_jws_hash")
        b.drop_column("removed_by")
        b.drop_column("added_by")
