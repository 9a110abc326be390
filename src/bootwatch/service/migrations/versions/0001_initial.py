"""Initial schema: providers, policies, signers, signing keys, attestation records.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "providers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("trust_model", sa.String(16), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=True, unique=True),
        sa.Column("attest_auth_required", sa.Boolean, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "provider",
            sa.String(64),
            sa.ForeignKey("providers.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("attestation_type", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("jws", sa.Text, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("signer_der", sa.LargeBinary, nullable=True),
        sa.Column("changed_by", sa.String(255), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_index("ix_policies_provider_type", "policies", ["provider", "attestation_type", "id"])
    op.create_table(
        "signers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "provider",
            sa.String(64),
            sa.ForeignKey("providers.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("thumbprint", sa.String(40), nullable=False),
        sa.Column("cert_der", sa.LargeBinary, nullable=False),
        sa.Column("added_at", TZ, nullable=False),
        sa.Column("removed_at", TZ, nullable=True),
    )
    op.create_index("ix_signers_thumbprint", "signers", ["thumbprint"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column(
            "provider",
            sa.String(64),
            sa.ForeignKey("providers.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("cert_der", sa.LargeBinary, nullable=False),
        sa.Column("private_key_enc", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("retire_at", TZ, nullable=True),
    )
    op.create_index("ix_signing_keys_provider", "signing_keys", ["provider"])
    op.create_table(
        "attestation_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("attestation_type", sa.String(32), nullable=False),
        sa.Column("vm_id", sa.String(128), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=True),
        sa.Column("evidence", sa.LargeBinary, nullable=True),
        sa.Column("evidence_expires_at", TZ, nullable=True),
    )
    op.create_index("ix_records_provider_time", "attestation_records", ["provider", "created_at"])
    op.create_index("ix_attestation_records_vm_id", "attestation_records", ["vm_id"])
    op.create_index(
        "ix_attestation_records_evidence_expires_at", "attestation_records", ["evidence_expires_at"]
    )


def downgrade() -> None:
    op.drop_table("attestation_records")
    op.drop_table("signing_keys")
    op.drop_table("signers")
    op.drop_table("policies")
    op.drop_table("providers")
