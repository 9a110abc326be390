"""A VM's provider binding: the issuer of the provider it is bound to.

``monitor_vms.provider`` changes meaning with this revision: it was the provider of
the VM's latest outcome, it is now the provider the VM is bound to (by ``vm enable
--provider``, else by its first outcome), and outcomes of any other provider are kept
as history only.  Rows keep their value, so an existing VM stays bound to the provider
that last attested it.  ``issuer`` is that provider's token issuer as its latest
outcome carried it; empty until one does (reports are then checked as before).

Revision ID: m0005
Revises: m0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "m0005"
down_revision = "m0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("monitor_vms") as batch:
        batch.add_column(sa.Column("issuer", sa.String(length=512), nullable=False,
                                   server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("monitor_vms") as batch:
        batch.drop_column("issuer")
