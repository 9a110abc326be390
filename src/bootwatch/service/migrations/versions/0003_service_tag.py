"""Service tag: the last published ServiceTags document and its change number.

Revision ID: 0003_service_tag
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_service_tag"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_tags",
        sa.Column("name", sa.String(80), primary_key=True),
        sa.Column("change_number", sa.Integer, nullable=False),
        sa.Column("prefixes", sa.Text, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_tags")
