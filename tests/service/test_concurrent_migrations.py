"""Processes starting at once on one new SQLite file (a `bootwatch server` and a
`bootwatch monitor run` beside it, say) each migrate it: the first to take the write lock
creates the schema, the others wait for it and find it at head.  Before, they interleaved
their CREATE statements ("table monitor_alerts already exists") or failed switching the
new file to WAL ("database is locked", answered by SQLite at once, without waiting): 5 of
5 trials failed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect

from bootwatch.monitor.db import current_revision as monitor_revision
from bootwatch.monitor.db import run_migrations as migrate_monitor
from bootwatch.service.db import current_revision, make_engine
from bootwatch.service.db import run_migrations as migrate_service


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_start_ups_migrate_one_new_sqlite_file(tmp_path: Path, trial: int) -> None:
    path = tmp_path / f"fresh-{trial}.db"
    engines = [make_engine(f"sqlite:///{path}") for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def start(engine_index: int) -> None:
        barrier.wait()
        try:
            engine = engines[engine_index]
            # a server migrates both histories, a monitor its own
            migrate_monitor(engine)
            if engine_index % 2 == 0:
                migrate_service(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert current_revision(engines[0]) is not None
        assert monitor_revision(engines[0]) is not None
        assert "monitor_vms" in inspect(engines[0]).get_table_names()
    finally:
        for e in engines:
            e.dispose()
