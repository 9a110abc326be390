"""The ORM models match what the Alembic migrations build (issue 10, item 7): schema
changes happen only through migrations, so a model edited without its migration (or
the reverse) fails here, on SQLite and on PostgreSQL, for the service's tables and the
monitor's (each with its own history and version table).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from bwservers import PG_URL, pg_schema
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine

from bootwatch.monitor.db import run_migrations as migrate_monitor
from bootwatch.monitor.models import MonitorBase
from bootwatch.service.db import make_engine
from bootwatch.service.db import run_migrations as migrate_service
from bootwatch.service.models import Base

VERSION_TABLES = {"alembic_version", "alembic_version_monitor"}

CASES: dict[str, tuple[Callable[[Engine], None], MetaData]] = {
    "service": (migrate_service, Base.metadata),
    "monitor": (migrate_monitor, MonitorBase.metadata),
}


def _differences(engine: Engine, metadata: MetaData) -> list[Any]:
    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any,
                ) -> bool:
        return not (type_ == "table" and name in VERSION_TABLES)

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={
            "compare_type": True, "include_object": include,
            "include_schemas": False})
        return list(compare_metadata(ctx, metadata))


@pytest.mark.parametrize("which", sorted(CASES))
def test_models_match_migrations_on_sqlite(which: str, tmp_path: Path) -> None:
    migrate, metadata = CASES[which]
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        migrate(engine)
        assert _differences(engine, metadata) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("which", sorted(CASES))
def test_models_match_migrations_on_postgresql(which: str) -> None:
    migrate, metadata = CASES[which]
    with pg_schema() as schema:
        engine = make_engine(PG_URL, schema=schema)
        try:
            migrate(engine)
            assert _differences(engine, metadata) == []
        finally:
            engine.dispose()
