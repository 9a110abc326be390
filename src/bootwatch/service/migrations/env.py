"""Alembic environment: always run on the connection bootwatch passes in."""

from __future__ import annotations

from alembic import context

from bootwatch.errors import ConfigError
from bootwatch.service.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise ConfigError("run migrations through bootwatch.service.db.run_migrations")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
