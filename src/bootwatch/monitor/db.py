"""The monitor's database: engine (shared helper) and its own Alembic history."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from bootwatch.errors import StorageError
from bootwatch.service.db import as_utc, make_engine, utcnow

__all__ = ["as_utc", "current_revision", "make_engine", "run_migrations", "utcnow"]


def _config() -> Config:
    ini = resources.files("bootwatch.monitor.migrations").joinpath("alembic.ini")
    return Config(str(ini))


def run_migrations(engine: Engine, revision: str = "head") -> None:
    """Upgrade the monitor's tables to ``revision``; an explicit start-up step."""
    cfg = _config()
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7355609)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"monitor database migration failed: {exc}") from exc


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": "alembic_version_monitor"})
        return ctx.get_current_revision()
