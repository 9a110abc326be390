"""VM list indexes for the dashboard's filters: (state | group | provider, attention, vm_id).

The fleet list pages by keyset on (attention, vm_id); with a state, group or
provider filter the old (state, vm_id) and (group_name, vm_id) indexes made
SQLite sort every matching VM for each page (117 ms for one group of 10,000 at
100,000 VMs).  These indexes return a filtered page in order, so any page costs
about the same.  They replace the two they extend.

Revision ID: m0002
Revises: m0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "m0002"
down_revision = "m0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_monitor_vms_state", table_name="monitor_vms")
    op.drop_index("ix_monitor_vms_group", table_name="monitor_vms")
    op.create_index("ix_monitor_vms_state", "monitor_vms", ["state", "attention", "vm_id"])
    op.create_index("ix_monitor_vms_group", "monitor_vms", ["group_name", "attention", "vm_id"])
    op.create_index("ix_monitor_vms_provider", "monitor_vms", ["provider", "attention", "vm_id"])


def downgrade() -> None:
    op.drop_index("ix_monitor_vms_provider", table_name="monitor_vms")
    op.drop_index("ix_monitor_vms_group", table_name="monitor_vms")
    op.drop_index("ix_monitor_vms_state", table_name="monitor_vms")
    op.create_index("ix_monitor_vms_group", "monitor_vms", ["group_name", "vm_id"])
    op.create_index("ix_monitor_vms_state", "monitor_vms", ["state", "vm_id"])
