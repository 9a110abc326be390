"""An EK's enrolment can be revoked: revoking a VM's AIK certificates also stops its TPM
enrolling again until an operator releases the VM id (``provider release-vm``).  Before,
the revoked VM re-enrolled at once and was issued a fresh certificate.

Revision ID: 0008_enrolment_revocation
Revises: 0007_record_request_id
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_enrolment_revocation"
down_revision = "0007_record_request_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("enrolled_eks") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("revoke_reason", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrolled_eks") as batch:
        batch.drop_column("revoke_reason")
        batch.drop_column("revoked_at")
