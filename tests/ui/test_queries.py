"""The shared read queries (monitor.queries) the API and the dashboard answer from,
on SQLite and PostgreSQL: keyset pages cover every VM once in attention order
with and without filters (the m0002 indexes), the prefix search, the grouped
recommendations and agent versions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bootwatch.errors import ProtocolError
from bootwatch.monitor import queries
from bootwatch.monitor.container import MonitorContainer, bootstrap
from bootwatch.monitor.db import make_engine
from bootwatch.monitor.settings import MonitorSettings

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MonitorContainer]:
    if request.param == "sqlite":
        c = bootstrap(MonitorSettings(data_dir=tmp_path))
        yield c
        c.engine.dispose()
        return
    schema = f"bwui_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        c = bootstrap(MonitorSettings(db_url=PG_URL, db_schema=schema))
        yield c
        c.engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _fleet(c: MonitorContainer, n: int) -> list[str]:
    ids = []
    for i in range(n):
        vm_id = str(uuid.UUID(int=i + 1)).upper()
        c.monitor.enable(vm_id, name=f"vm-{i:03d}", group=f"g{i % 3}")
        ids.append(vm_id)
    for vm_id in ids[::4]:  # a quarter stop being monitored
        c.monitor.disable(vm_id)
    return ids


def _all_pages(c: MonitorContainer, **filters: str) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    cursor = None
    while True:
        page = queries.list_vms(c.monitor, limit=7, cursor=cursor, **filters)
        out.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out


def test_keyset_pages_cover_the_fleet_once_in_attention_order(
        container: MonitorContainer,
) -> None:
    ids = _fleet(container, 40)
    rows = _all_pages(container)
    assert sorted(r["vm_id"] for r in rows) == sorted(ids)
    states = [r["state"] for r in rows]
    assert states == sorted(states, key=["not_reporting", "not_monitored"].index)
    assert states.count("not_monitored") == 10
    for filters in ({"group": "g1"}, {"state": "not_monitored"}, {"state": "not_reporting",
                                                                   "group": "g2"}):
        got = _all_pages(container, **filters)
        want = [r for r in rows if all(
            r["group" if k == "group" else k] == v for k, v in filters.items())]
        assert [r["vm_id"] for r in got] == [r["vm_id"] for r in want], filters


def test_prefix_search_by_name_or_vm_id(container: MonitorContainer) -> None:
    ids = _fleet(container, 12)
    names = [r["name"] for r in queries.list_vms(container.monitor, q="vm-01")["items"]]
    assert sorted(names) == ["vm-010", "vm-011"]
    by_id = queries.list_vms(container.monitor, q=ids[5][-12:].lower())["items"]
    assert by_id == []  # a prefix, not a substring
    by_id = queries.list_vms(container.monitor, q=ids[5].lower())["items"]
    assert [r["vm_id"] for r in by_id] == [ids[5]]
    assert queries.list_vms(container.monitor, q="100%")["items"] == []
    with pytest.raises(ProtocolError, match="'cursor'"):
        queries.list_vms(container.monitor, cursor="not-a-cursor")


def test_recommendation_groups_and_agent_versions(container: MonitorContainer) -> None:
    _fleet(container, 8)
    groups = queries.recommendation_groups(container.monitor)
    assert groups
    for g in groups:
        assert g["Healthy"] + g["Unhealthy"] + g["NotApplicable"] == 8
    key = groups[0]["key"]
    assert queries.recommendation_groups(container.monitor, key=key) == [groups[0]]
    rows = queries.list_recommendations(container.monitor, key=key, limit=3)["items"]
    assert len(rows) == 3 and all(r["vm_name"].startswith("vm-") for r in rows)
    more = queries.list_recommendations(container.monitor, key=key, limit=10,
                                        after=rows[-1]["vm_id"])["items"]
    assert len(more) == 5
    assert queries.agent_versions(container.monitor) == [
        {"version": "", "vms": 8, "monitored": 6}]
