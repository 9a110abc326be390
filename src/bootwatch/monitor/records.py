"""Plain row records for the monitor's batch ingestion, written with Core statements.

Why: through the ORM's unit of work a batch of outcome events cost about 0.7 ms
of CPU per event, most of it not the monitor's logic: building instrumented
entities for every row a batch loads (a VM, its seven recommendations, its
alerts, baselines and boots), tracking each attribute change, and, on SQLite,
one ``UPDATE`` statement per changed row at flush.  A batch instead loads its
rows as :class:`Record` objects (the table's columns as plain attributes, the
values the database returned kept aside), lets the same domain code change
them, and :meth:`RowSet.flush` writes what changed at the end of the
transaction: deletes, then updates grouped by the set of columns that changed
(one ``executemany`` per group; a column whose value did not change is not
written, so indexes on it are not touched), then inserts (one ``executemany``
per table, in creation order).

Records are handed to the domain code typed as the mapped class (a record has
exactly the mapped class's column attributes and nothing else); they are never
attached to a session, so nothing but :meth:`RowSet.flush` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, delete, insert, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from bootwatch.monitor.models import MonitorBase

__all__ = ["Record", "RowSet"]

T = TypeVar("T", bound=MonitorBase)


class Record:
    """One row: its columns as attributes (``__dict__`` holds the columns, nothing else).

    A column left out of the load (``defer``) is read from the database on first
    access, like an ORM deferred column."""

    __slots__ = ("__dict__", "_lazy")

    _lazy: _Lazy | None

    def __getattr__(self, name: str) -> Any:
        if name == "_lazy":
            raise AttributeError(name)
        lazy = self._lazy
        if lazy is None or name not in lazy.names:
            raise AttributeError(name)
        table = lazy.meta.table
        row = lazy.session.connection().execute(
            select(*(table.c[k] for k in lazy.names)).where(
                *(table.c[k] == self.__dict__[k] for k in lazy.meta.primary_key))
        ).one()
        original = dict(zip(lazy.names, row, strict=True))
        lazy.originals[id(self)] = original
        for k, v in original.items():
            self.__dict__.setdefault(k, v)  # a column written before it was read wins
        return self.__dict__[name]


@dataclass(frozen=True)
class _Lazy:
    """What a load deferred (shared by its records) and, per record read, the values."""

    session: Session
    meta: _Meta
    names: tuple[str, ...]
    originals: dict[int, dict[str, Any]]


@dataclass(frozen=True)
class _Meta:
    table: Table
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]
    #: every column's value when a constructor does not name it (the column's scalar
    #: default, as the ORM would insert, else None)
    defaults: dict[str, Any]


_META: dict[str, _Meta] = {}


def _meta(cls: type[MonitorBase]) -> _Meta:
    table = cast(Table, cls.__table__)
    meta = _META.get(table.name)
    if meta is None:
        defaults: dict[str, Any] = {}
        for c in table.columns:
            default = c.default
            defaults[c.key] = (default.arg if isinstance(default, ScalarElementColumnDefault)
                               else None)
        meta = _META[table.name] = _Meta(
            table, tuple(c.key for c in table.columns),
            tuple(c.key for c in table.primary_key.columns), defaults)
    return meta


class RowSet:
    """The rows one transaction loaded, created and deleted (see the module docstring)."""

    def __init__(self) -> None:
        #: (table, record, the columns loaded, their values as loaded)
        self._loaded: list[tuple[_Meta, Record, tuple[str, ...], tuple[Any, ...]]] = []
        self._new: dict[str, tuple[_Meta, list[Record]]] = {}
        self._deleted: dict[int, tuple[_Meta, Record]] = {}
        #: deferred columns read, by id of the record
        self._deferred_read: dict[int, dict[str, Any]] = {}

    def load(self, session: Session, cls: type[T], *where: ColumnElement[bool],
             order_by: Sequence[Any] = (), defer: tuple[str, ...] = ()) -> list[T]:
        """Rows of ``cls``'s table matching ``where``, as records; ``defer`` names
        columns read only when a record's attribute is first read (large documents
        most batches never look at: a boot's events)."""
        meta = _meta(cls)
        cols = tuple(c for c in meta.columns if c not in defer)
        stmt = select(*(meta.table.c[c] for c in cols)).where(*where)
        if order_by:
            stmt = stmt.order_by(*order_by)
        out: list[Record] = []
        loaded = self._loaded
        lazy = _Lazy(session, meta, defer, self._deferred_read) if defer else None
        # the session's connection, not session.execute: a Core statement, no ORM loading
        for row in session.connection().execute(stmt).all():
            rec = Record()
            values = tuple(row)
            rec.__dict__.update(zip(cols, values, strict=True))
            rec._lazy = lazy
            loaded.append((meta, rec, cols, values))
            out.append(rec)
        return cast(list[T], out)

    def new(self, cls: type[T], values: dict[str, Any]) -> T:
        """A row to insert at flush; columns not in ``values`` take their default."""
        meta = _meta(cls)
        unknown = values.keys() - meta.defaults.keys()
        if unknown:
            raise TypeError(f"{meta.table.name} has no column(s) {sorted(unknown)}")
        rec = Record()
        rec._lazy = None
        rec.__dict__.update(meta.defaults)
        rec.__dict__.update(values)
        self._new.setdefault(meta.table.name, (meta, []))[1].append(rec)
        return cast(T, rec)

    def delete(self, cls: type[MonitorBase], obj: object) -> None:
        """Delete a loaded row at flush, or forget a new one."""
        meta = _meta(cls)
        entry = self._new.get(meta.table.name)
        if entry is not None and any(r is obj for r in entry[1]):
            entry[1][:] = [r for r in entry[1] if r is not obj]
            return
        self._deleted[id(obj)] = (meta, cast(Record, obj))

    def flush(self, session: Session) -> None:
        """Write the changes: deletes, updates grouped by changed columns, inserts."""
        conn = session.connection()
        by_table: dict[str, tuple[_Meta, list[dict[str, Any]]]] = {}
        for meta, rec in self._deleted.values():
            by_table.setdefault(meta.table.name, (meta, []))[1].append(
                {f"k_{k}": rec.__dict__[k] for k in meta.primary_key})
        for meta, params in by_table.values():
            conn.execute(delete(meta.table).where(_pk_match(meta)), params)
        updates: dict[tuple[str, tuple[str, ...]], tuple[_Meta, list[dict[str, Any]]]] = {}
        for meta, rec, cols, orig in self._loaded:
            if id(rec) in self._deleted:
                continue
            now = rec.__dict__
            current = _values(cols, now)
            extra = len(now) != len(cols)  # a deferred column read or written
            if current == orig and not extra:
                continue
            changed = [k for k, new, old in zip(cols, current, orig, strict=True)
                       if new is not old and new != old]
            if extra:
                read = self._deferred_read.get(id(rec), {})
                changed += [k for k, new in now.items() if k not in cols
                            and ((old := read.get(k, _UNSET)) is not new and new != old)]
            if not changed:
                continue
            values = {k: now[k] for k in changed}
            values.update({f"k_{k}": orig[cols.index(k)] for k in meta.primary_key})
            updates.setdefault((meta.table.name, tuple(changed)), (meta, []))[1].append(values)
        for meta, rows in updates.values():
            conn.execute(meta.table.update().where(_pk_match(meta)), rows)
        for meta, recs in self._new.values():
            if recs:
                conn.execute(insert(meta.table), [r.__dict__ for r in recs])
        self._loaded.clear()
        self._new.clear()
        self._deleted.clear()
        self._deferred_read.clear()


def _values(cols: tuple[str, ...], values: dict[str, Any]) -> tuple[Any, ...]:
    """``values``' entries for ``cols`` as a tuple (one C call; cached per column set)."""
    getter = _GETTERS.get(cols)
    if getter is None:
        one = itemgetter(*cols)
        getter = _GETTERS[cols] = one if len(cols) > 1 else (lambda d: (one(d),))
    return getter(values)


_GETTERS: dict[tuple[str, ...], Any] = {}
_UNSET = object()


def _pk_match(meta: _Meta) -> ColumnElement[bool]:
    return and_(*(meta.table.c[k] == bindparam(f"k_{k}") for k in meta.primary_key))
