"""A VM's recommendations digest, and an index of recommendations by code.

The digest says which evaluation a VM's recommendation rows hold.
A refresh evaluates a VM's seven recommendations from its facts; most refreshes
(a repeated attestation of a known boot) produce the rows already stored.  The
digest of the evaluated results (keys, codes, causes, texts) is kept on the VM,
so a refresh whose digest matches neither reads nor writes the rows: an ingested
batch of outcome events no longer loads seven rows per VM.  Empty (NULL) for VMs
refreshed before this revision: their rows are read and compared once, as before.

The (code, key) index answers the fleet summary's Unhealthy counts per recommendation
from the Unhealthy rows alone (the (key, code) index made SQLite read all seven rows of
every VM: 600 ms at 100,000 VMs).

Revision ID: m0003
Revises: m0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m0003"
down_revision = "m0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_vms") as batch:
        batch.add_column(sa.Column("recommendations_digest", sa.String(length=64),
                                   nullable=True))
    op.create_index("ix_monitor_recs_code", "monitor_recommendations", ["code", "key"])


def downgrade() -> None:
    op.drop_index("ix_monitor_recs_code", table_name="monitor_recommendations")
    with op.batch_alter_table("monitor_vms") as batch:
        batch.drop_column("recommendations_digest")
