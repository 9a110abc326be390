"""Database engine, sessions and migrations.

SQLite (the default) runs in WAL mode with a busy timeout so several worker
processes can share one file; PostgreSQL is used by URL, optionally inside a
schema (``Settings.db_schema``, set through ``search_path``).  The schema is
created and upgraded only by the Alembic migrations shipped in
``bootwatch/service/migrations`` (:func:`run_migrations`), which the app runs
at start-up and the tests run on both databases.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bootwatch.errors import StorageError

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "Database",
    "alembic_config",
    "as_utc",
    "current_revision",
    "make_engine",
    "run_migrations",
    "utcnow",
]

SQLITE_BUSY_TIMEOUT_MS = 10_000


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only clock the store uses)."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def make_engine(url: str, *, schema: str = "") -> Engine:
    """Create the engine; SQLite gets WAL + busy timeout, PostgreSQL an optional schema."""
    connect_args: dict[str, Any] = {}
    # hide_parameters: a database error's text (logged, and once answered) keeps its SQL
    # but not the bound values, which are request data (policies, evidence, principals)
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if url.startswith("sqlite"):
        connect_args["check_same_thread"] = False
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_MS / 1000
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    elif schema:
        if not schema.replace("_", "").isalnum():
            raise StorageError(f"db_schema {schema!r}: only letters, digits and _ allowed")
        connect_args["options"] = f"-csearch_path={schema}"
    try:
        engine = create_engine(url, connect_args=connect_args, **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot use database URL: {exc}") from exc
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _wal(cur)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def _wal(cur: Any) -> None:
    """Switch the file to WAL (it stays so: later connections find it done).  On a new
    file another process starting at the same moment may hold the lock the switch needs,
    and SQLite then answers "database is locked" at once, without its busy handler: the
    switch is tried again for up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def alembic_config() -> Config:
    """The Alembic configuration shipped in the package (script location = migrations/)."""
    ini = resources.files("bootwatch.service.migrations").joinpath("alembic.ini")
    return Config(str(ini))


def run_migrations(
    engine: Engine,
    revision: str = "head",
    *,
    config: Config | None = None,
    lock_id: int = 7355608,
    what: str = "database",
) -> None:
    """Upgrade the database to ``revision`` (default: the newest migration) with the
    service's Alembic history, or with ``config``'s (the monitor keeps its own)."""
    cfg = config or alembic_config()
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # serialise concurrent upgrades from several workers
                conn.execute(text(f"SELECT pg_advisory_xact_lock({int(lock_id)})"))
            elif engine.dialect.name == "sqlite":
                # the same on SQLite (a server and a `monitor run` starting at once on one
                # new file): the write lock before Alembic reads its version table, so the
                # later one waits (busy timeout), then finds the schema at head.  pysqlite
                # opens no transaction for DDL by itself; this one is committed by begin()
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        raise StorageError(f"{what} migration failed: {exc}") from exc


def current_revision(engine: Engine, *, version_table: str = "alembic_version") -> str | None:
    """The Alembic revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": version_table})
            return ctx.get_current_revision()
    except SQLAlchemyError as exc:  # a database away: a typed error, not a traceback
        cause = getattr(exc, "orig", None) or exc  # the driver's message, without the SQL
        first = (str(cause).splitlines() or [""])[0]
        raise StorageError(f"cannot read the schema revision: {exc.__class__.__name__}: "
                           f"{first[:300]}") from None


class Database:
    """The engine plus a session factory; one per app (per worker)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._factory = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        session = self._factory()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise StorageError(f"database error: {exc.__class__.__name__}: {exc}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def ping(self) -> None:
        """Raise StorageError unless the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StorageError(f"database unreachable: {exc.__class__.__name__}") from exc
