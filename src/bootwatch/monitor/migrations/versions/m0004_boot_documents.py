"""A boot's documents (its events and claims) in a table of their own.

Why: every repeated attestation of a known boot updates its boot row (last
seen, verdict, reason), and 85% of the outcome events a fleet sends are such
repeats.  With the boot's event list (5-60 KB of JSON) and its claims in the
same row, SQLite rewrote the row's overflow pages for each of those updates and
had to walk them to read any column stored after the documents (last_seen,
verdict, baseline_id): reading a batch's boots cost about 28 us per event and
updating them about 25 us more, with the commit.  The documents are written
once, when the boot is first seen, and read only for a diff, a new baseline or
a policy dry run, so they move to ``monitor_boot_documents`` (one row per boot,
keyed by the boot's id) and the boot row stays a few hundred bytes.

Revision ID: m0004
Revises: m0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m0004"
down_revision = "m0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_boot_documents",
        sa.Column("boot_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("claims", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("boot_id"),
    )
    op.execute("INSERT INTO monitor_boot_documents (boot_id, events, claims) "
               "SELECT id, events, claims FROM monitor_boots")
    with op.batch_alter_table("monitor_boots") as batch:
        batch.drop_column("events")
        batch.drop_column("claims")


def downgrade() -> None:
    with op.batch_alter_table("monitor_boots") as batch:
        batch.add_column(sa.Column("events", sa.Text(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("claims", sa.Text(), nullable=False, server_default="[]"))
    op.execute("UPDATE monitor_boots SET "
               "events = (SELECT d.events FROM monitor_boot_documents d "
               "WHERE d.boot_id = monitor_boots.id), "
               "claims = (SELECT d.claims FROM monitor_boot_documents d "
               "WHERE d.boot_id = monitor_boots.id) "
               "WHERE id IN (SELECT boot_id FROM monitor_boot_documents)")
    with op.batch_alter_table("monitor_boots") as batch:
        batch.alter_column("events", server_default=None)
        batch.alter_column("claims", server_default=None)
    op.drop_table("monitor_boot_documents")
