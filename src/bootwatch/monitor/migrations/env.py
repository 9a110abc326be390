"""Alembic environment of the monitor: run on the connection bootwatch passes in."""

from __future__ import annotations

from alembic import context

from bootwatch.errors import ConfigError
from bootwatch.monitor.models import MonitorBase

connection = context.config.attributes.get("connection")
if connection is None:
    raise ConfigError("run monitor migrations through bootwatch.monitor.db.run_migrations")
context.configure(
    connection=connection,
    target_metadata=MonitorBase.metadata,
    render_as_batch=True,
    version_table="alembic_version_monitor",
)
with context.begin_transaction():
    context.run_migrations()
