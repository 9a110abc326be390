"""Core INSERT and UPDATE statements run by the DB-API cursor with plain tuples.

Why: the batch fast path (``monitor/fastpath.py``) writes about three rows per
outcome event.  SQLAlchemy's ``executemany`` builds a parameter dictionary per
row and runs each value through its bind-processing machinery: about 5 us per
row on this machine, more than SQLite takes to store it.  A :class:`RawWrite`
is the same Core statement, compiled once for the engine's dialect (so the SQL,
the placeholders and the value conversions are SQLAlchemy's own: a SQLite
``DATETIME`` is stored in the same text form as through the ORM), run with
``cursor.executemany`` on the session's connection, inside its transaction.

Rows are given as tuples in the order of the statement's ``columns`` (for an
UPDATE: the columns it sets, then the key columns).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Dialect, Table, bindparam, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

__all__ = ["RawWrite", "raw_insert", "raw_update"]

_NONE: Any = object()


@dataclass(frozen=True)
class RawWrite:
    """A compiled statement and how to turn a row tuple into the driver's parameters."""

    sql: str
    columns: tuple[str, ...]
    #: for a positional driver: the index in ``columns`` of each placeholder, in order
    order: tuple[int, ...]
    #: the driver's parameter name of each column (a named driver)
    names: tuple[str, ...]
    positional: bool
    #: (index in ``columns``, conversion) for each column whose type converts values
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: the driver's base exception: raised as SQLAlchemy's DBAPIError, so the caller's
    #: transaction treats a busy or lost database as from any other statement
    dbapi_error: type[Exception]

    def executemany(self, session: Session, rows: Sequence[Sequence[Any]],
                    memo: dict[tuple[int, int], Any] | None = None) -> None:
        """Run for ``rows``; ``memo`` (owned by the caller, alive no longer than the rows'
        values) keeps each value's conversion by identity: a batch writes the same
        time objects into several rows and tables."""
        if not rows:
            return
        params: list[Any] = []
        conv = self.converters
        memo = {} if memo is None else memo
        for row in rows:
            if conv:
                row = list(row)
                for i, f in conv:
                    v = row[i]
                    key = (id(f), id(v))
                    done = memo.get(key, _NONE)
                    if done is _NONE:
                        done = memo[key] = (v, f(v))
                    row[i] = done[1]
            if self.positional:
                params.append(tuple([row[i] for i in self.order]))
            else:
                params.append(dict(zip(self.names, row, strict=True)))
        cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(self.sql, params)
        except self.dbapi_error as exc:
            raise DBAPIError.instance(self.sql, params, exc, self.dbapi_error) from exc
        finally:
            cursor.close()


def _compile(stmt: Any, dialect: Dialect, columns: tuple[str, ...],
             types: dict[str, Any]) -> RawWrite:
    compiled = stmt.compile(dialect=dialect)
    index = {c: i for i, c in enumerate(columns)}
    positional = bool(dialect.positional)
    order = tuple(index[n] for n in compiled.positiontup) if positional else ()
    converters = []
    for c in columns:
        proc = types[c].dialect_impl(dialect).bind_processor(dialect)
        if proc is not None:
            converters.append((index[c], proc))
    return RawWrite(compiled.string, columns, order, columns, positional, tuple(converters),
                    dialect.loaded_dbapi.Error)


def raw_insert(table: Table, columns: Sequence[str], dialect: Dialect) -> RawWrite:
    """``INSERT INTO table (columns...)``; every other column takes its server default
    or NULL (give every column a Python default would fill)."""
    cols = tuple(columns)
    stmt = insert(table).values({c: bindparam(c, type_=table.c[c].type) for c in cols})
    return _compile(stmt, dialect, cols, {c: table.c[c].type for c in cols})


def raw_update(table: Table, columns: Sequence[str], keys: Sequence[str],
               dialect: Dialect) -> RawWrite:
    """``UPDATE table SET columns... WHERE keys...`` (rows: the new values, then the keys)."""
    sets, ks = tuple(columns), tuple(keys)
    stmt = table.update().values({c: bindparam(c, type_=table.c[c].type) for c in sets})
    for k in ks:
        stmt = stmt.where(table.c[k] == bindparam(f"k_{k}", type_=table.c[k].type))
    all_cols = sets + tuple(f"k_{k}" for k in ks)
    types = {**{c: table.c[c].type for c in sets}, **{f"k_{k}": table.c[k].type for k in ks}}
    return _compile(stmt, dialect, all_cols, types)
