"""Core statements compiled once per dialect and run on the driver's cursor: the purge write's path.

Why: through ``Connection.execute`` a statement costs 0.1-0.2 ms of Python before the driver sees
it (building the statement, its cache key, the execution context, the result), against ~10 µs for
the driver itself (cProfile of the ledger thread, ``bench/purge_stream_cpu.py --profile``; the
benchmark's own figure is the purge's whole CPU); a purge writes three statements and its
acknowledgement two more, on the same interpreter as the data plane. The SQL is still
SQLAlchemy's: compiled from the schema's ``Table`` objects for the connection's dialect, with the
columns' own bind processors, so each engine receives the text and values it would receive through
``execute`` (``UTCDateTime`` on SQLite by ``schema.sqlite_utc_text``, the same text from C calls).

Rules: a :class:`Prepared` runs inside the caller's transaction (it uses the connection's driver
connection, where that transaction is open); its parameters are the statement's required bind names;
literal values in the statement (``status == 'processing'``) keep the values they were built with.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from operator import attrgetter, itemgetter, methodcaller
from typing import Any

from psycopg.pq import TransactionStatus
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.expression import ClauseElement

from edgecache.db.schema import UTCDateTime, sqlite_utc_text


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    fixed: dict[str, Any]
    """Values of the binds the statement carries itself."""
    processors: dict[str, Callable[[Any], Any]]
    pick: Callable[[dict[str, Any]], tuple[Any, ...]] | None
    """The positional values in the statement's parameter order (qmark/format styles); None for
    named styles, which take the dict."""
    row: Callable[[Sequence[Any]], Sequence[Any] | dict[str, Any]]
    """The driver's values from a row of the ``column_keys`` values in their order."""

    def bind(self, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = {**self.fixed, **params} if self.fixed else dict(params)
        for name, process in self.processors.items():
            values[name] = process(values[name])
        if self.pick is None:
            return values
        return self.pick(values)


class Prepared:
    """One statement, compiled at its first use on each dialect."""

    def __init__(self, statement: ClauseElement, column_keys: Iterable[str] | None = None) -> None:
        """``column_keys``: for an ``insert(table)`` without values, the columns it sets."""
        self._statement = statement
        self._keys = None if column_keys is None else list(column_keys)
        self._by_dialect: dict[str, _Compiled] = {}
        self._last: tuple[Dialect | None, _Compiled | None] = (None, None)
        """The dialect asked last and its statement: a process has one engine's dialect at a time."""

    def _compiled(self, dialect: Dialect) -> _Compiled:
        last, compiled_last = self._last
        if last is dialect and compiled_last is not None:
            return compiled_last
        key = f"{dialect.name}+{dialect.driver}"
        found = self._by_dialect.get(key)
        if found is None:
            compiled: Any = self._statement.compile(dialect=dialect, column_keys=self._keys)
            processors = {}
            for name, bind in compiled.binds.items():
                process = (
                    sqlite_utc_text
                    if dialect.name == "sqlite" and type(bind.type) is UTCDateTime
                    else bind.type.dialect_impl(dialect).bind_processor(dialect)
                )
                if process is not None:
                    processors[name] = process
            fixed = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
            order = tuple(compiled.positiontup) if compiled.positional else None
            found = _Compiled(
                compiled.string,
                fixed,
                processors,
                _picker(order),
                _row_binder(order, self._keys, processors, fixed),
            )
            self._by_dialect[key] = found
        self._last = (dialect, found)
        return found

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run it once; the rows it returns."""
        compiled = self._compiled(conn.dialect)
        return list(_on_cursor(conn, "execute", compiled.sql, compiled.bind(params), _FETCHALL))

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run it once; the rows it changed."""
        compiled = self._compiled(conn.dialect)
        return int(_on_cursor(conn, "execute", compiled.sql, compiled.bind(params), _ROWCOUNT))

    def insert_row(self, conn: Connection, row: Sequence[Any]) -> int:
        """The row id of an ``INSERT`` of the values of ``column_keys`` in their order: no mapping built
        and taken apart again for the driver (the purge write's rows, decision 0034)."""
        compiled = self._compiled(conn.dialect)
        return int(_on_cursor(conn, "execute", compiled.sql, compiled.row(row), _LASTROWID))

    def run_rows(self, conn: Connection, rows: Iterable[Sequence[Any]]) -> None:
        """``executemany`` of rows of the ``column_keys`` values in their order."""
        compiled = self._compiled(conn.dialect)
        binder = compiled.row
        _on_cursor(conn, "executemany", compiled.sql, [binder(r) for r in rows], _nothing)


_FETCHALL = methodcaller("fetchall")
_ROWCOUNT = attrgetter("rowcount")
_LASTROWID = attrgetter("lastrowid")


def _nothing(cursor: Any) -> None:
    return None


def _on_cursor(conn: Connection, method: str, sql: str, args: Any, read: Callable[[Any], Any]) -> Any:
    """``method`` of a new cursor of the driver's connection, then what ``read`` takes from it; the
    cursor closed either way. try/finally and readers built once rather than a context manager:
    every purge runs this (decision 0022)."""
    cursor: Any = conn.connection.cursor()
    try:
        getattr(cursor, method)(sql, args)
        return read(cursor)
    finally:
        cursor.close()


def _picker(order: tuple[str, ...] | None) -> Callable[[dict[str, Any]], tuple[Any, ...]] | None:
    if order is None:
        return None
    if len(order) > 1:
        # One C call rather than a generator per statement.
        return itemgetter(*order)
    # itemgetter with a single key returns the bare value, not a 1-tuple: the driver wants a
    # sequence.
    name = order[0]
    return lambda values: (values[name],)


def _row_binder(
    order: tuple[str, ...] | None,
    keys: list[str] | None,
    processors: dict[str, Callable[[Any], Any]],
    fixed: dict[str, Any],
) -> Callable[[Sequence[Any]], Sequence[Any] | dict[str, Any]]:
    """What turns a row of the ``keys`` values into the driver's values. When the statement takes
    exactly those, positionally and in that order (an ``INSERT`` on SQLite), the row itself with
    its few processed values replaced; else a mapping, bound as :meth:`_Compiled.bind` does."""
    names = keys or []
    if order is None or list(order) != names or fixed:
        pick = _picker(order)

        def by_name(row: Sequence[Any]) -> Sequence[Any] | dict[str, Any]:
            values = {**fixed, **dict(zip(names, row, strict=True))}
            for name, process in processors.items():
                values[name] = process(values[name])
            return values if pick is None else pick(values)

        return by_name
    at = [(names.index(name), process) for name, process in processors.items()]
    if not at:
        return tuple

    def in_place(row: Sequence[Any]) -> list[Any]:
        values = list(row)
        for i, process in at:
            values[i] = process(values[i])
        return values

    return in_place


_OPEN = (TransactionStatus.INTRANS, TransactionStatus.INERROR)
"""psycopg's transaction states in which a savepoint of the transaction can still be rolled back to."""


@contextmanager
def savepoint(conn: Connection, name: str) -> Iterator[None]:
    """A savepoint on the driver's connection: released on normal exit, rolled back to (and
    released) when the block raises, so the block's writes are all kept or all undone while the
    enclosing transaction goes on.

    When the block raises after the database ended the whole transaction (SQLite's rollback on a
    full disk or an I/O error), there is no savepoint left to roll back to: the block's own error is
    raised, not the driver's "no such savepoint". When the block swallowed a failed statement on
    PostgreSQL, the transaction is aborted and ``RELEASE`` refused, but the savepoint is still
    there: rolling back to it recovers the transaction, and ``RELEASE``'s error is raised (the
    block's writes undone, as when it raises)."""
    raw: Any = conn.connection.driver_connection
    with closing(conn.connection.cursor()) as cursor:
        cursor.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            _undo(raw, cursor, name)
            raise
        try:
            cursor.execute(f"RELEASE SAVEPOINT {name}")
        except Exception:
            _undo(raw, cursor, name)
            raise


def _undo(raw: Any, cursor: Any, name: str) -> None:
    """Roll back to savepoint ``name`` and release it, if the transaction holding it is still open."""
    if isinstance(raw, sqlite3.Connection):
        if not raw.in_transaction:
            return
    elif raw.info.transaction_status not in _OPEN:
        return  # ended by the block, or the connection is gone
    cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
    cursor.execute(f"RELEASE SAVEPOINT {name}")
