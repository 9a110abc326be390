"""Enrolment: each provider's AIK CA, issued AIK certificates (and their revocation),
the VM id each EK is bound to, and the round-one challenges (one answer each).

Revision ID: 0004_enrollment
Revises: 0003_service_tag
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_enrollment"
down_revision = "0003_service_tag"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _provider() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("provider", sa.String(64),
                     sa.ForeignKey("providers.name", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "aik_cas",
        sa.Column("provider", sa.String(64), sa.ForeignKey("providers.name", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("cert_der", sa.LargeBinary, nullable=False),
        sa.Column("private_key_enc", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "aik_certificates",
        sa.Column("serial", sa.String(40), primary_key=True),
        _provider(),
        sa.Column("vm_id", sa.String(64), nullable=False),
        sa.Column("aik_name", sa.String(132), nullable=False),
        sa.Column("ek_cert_sha256", sa.String(64), nullable=False),
        sa.Column("cert_der", sa.LargeBinary, nullable=False),
        sa.Column("issued_at", TZ, nullable=False),
        sa.Column("not_after", TZ, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_aik_certificates_provider_vm", "aik_certificates", ["provider", "vm_id"])
    op.create_table(
        "enrolled_eks",
        _provider(),
        sa.Column("ek_key_sha256", sa.String(64), nullable=False),
        sa.Column("vm_id", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("provider", "ek_key_sha256"),
        sa.UniqueConstraint("provider", "vm_id", name="uq_enrolled_eks_provider_vm"),
    )
    op.create_table(
        "enroll_challenges",
        sa.Column("id", sa.String(32), primary_key=True),
        _provider(),
        sa.Column("expires_at", TZ, nullable=False),
        sa.Column("used_at", TZ, nullable=True),
    )
    op.create_index("ix_enroll_challenges_expires_at", "enroll_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_table("enroll_challenges")
    op.drop_table("enrolled_eks")
    op.drop_table("aik_certificates")
    op.drop_table("aik_cas")
