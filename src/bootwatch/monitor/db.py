"""The monitor's database: the service's engine and migration helpers, run with the
monitor's own Alembic history (version table ``alembic_version_monitor``)."""

from __future__ import annotations

from importlib import resources

from alembic.config import Config
from sqlalchemy import Engine

from bootwatch.service import db as _db
from bootwatch.service.db import as_utc, make_engine, utcnow

__all__ = ["as_utc", "current_revision", "make_engine", "run_migrations", "utcnow"]


def _config() -> Config:
    ini = resources.files("bootwatch.monitor.migrations").joinpath("alembic.ini")
    return Config(str(ini))


def run_migrations(engine: Engine, revision: str = "head") -> None:
    """Upgrade the monitor's tables to ``revision``; an explicit start-up step."""
    _db.run_migrations(engine, revision, config=_config(), lock_id=7355609,
                       what="monitor database")


def current_revision(engine: Engine) -> str | None:
    return _db.current_revision(engine, version_table="alembic_version_monitor")
