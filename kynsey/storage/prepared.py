"""Statements of the hot path run on the driver's own cursor, compiled once per database (SPEC N2).

``Connection.execute`` costs about a tenth of a millisecond above the driver on this
project's 2-core machines (an execution context, result metadata, events), and a
reply's turn runs up to five statements before its backend is called. A ``Prepared``
statement keeps what SQLAlchemy compiled for each database (the SQL, the order of
its parameters and their bind processors, e.g. how SQLite stores a datetime) and
runs it on the job's connection, in the job's transaction, through the DBAPI
cursor: on PostgreSQL SQLAlchemy's asyncpg adapter, with its prepared-statement cache.

Errors are SQLAlchemy's, as ``Connection.execute`` raises them: a driver error becomes
its ``DBAPIError`` subclass (``IntegrityError`` for a unique index, ``RolledBack`` for a
deadlock), and a lost or
refused server an ``OperationalError`` whose connection is invalidated together with
the pool, as ``storage/db.py`` makes SQLAlchemy do. A statement cancelled half-way
invalidates its connection, as SQLAlchemy does.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from kynsey.storage.db import RolledBack, is_outage, is_rolled_back


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the parameters, in the order the SQL takes them
    processors: tuple[Callable[[Any], Any] | None, ...]
    fixed: dict[str, Any]  # the values a statement holds itself (``status == "streaming"``)
    row: Any  # a namedtuple of the result's columns, for a SELECT

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        if self.fixed:
            params = {**self.fixed, **params}
        return [p(params[n]) if p else params[n] for n, p in zip(self.names, self.processors, strict=True)]


class Prepared:
    """A Core statement with bound parameters only, run on the driver's cursor."""

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """The SELECT's rows, as named tuples of its columns."""
        compiled, cursor = self._execute(conn, params)
        try:
            return [compiled.row._make(r) for r in cursor.fetchall()]
        finally:
            cursor.close()

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run the statement; how many rows it changed."""
        _, cursor = self._execute(conn, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def run_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per set of ``params``, in one call to the driver."""
        self._execute(conn, params, many=True)[1].close()

    def _execute(self, conn: Connection, params, *, many: bool = False):
        compiled = self._compiled.get(conn.dialect.name) or self._compile(conn.dialect)
        args = [compiled.args(p) for p in params] if many else compiled.args(params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            (cursor.executemany if many else cursor.execute)(compiled.sql, args)
        except Exception as exc:
            cursor.close()
            raise _translated(conn, exc, compiled.sql, args, cursor) from exc
        except BaseException as exc:  # cancelled mid-statement: the connection's state is unknown
            conn.invalidate(exc)
            raise
        return compiled, cursor

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = cast(SQLCompiler, cast(ClauseElement, self.statement).compile(dialect=dialect))
        names = tuple(compiled.positiontup or ())
        binds = [compiled.binds[n] for n in names]
        processors = tuple(b.type._cached_bind_processor(dialect) for b in binds)
        fixed = {n: b.effective_value for n, b in zip(names, binds, strict=True) if not b.required}
        columns = getattr(self.statement, "selected_columns", None)
        row = namedtuple("Row", [c.key for c in columns]) if columns is not None else None
        self._compiled[dialect.name] = result = _Compiled(compiled.string, names, processors, fixed, row)
        return result


def _translated(conn: Connection, exc: Exception, sql: str, args, cursor) -> Exception:
    """``exc`` as SQLAlchemy's exception; a server outage also drops this connection and the pool's others."""
    dbapi = conn.dialect.loaded_dbapi
    driver_error = isinstance(exc, dbapi.Error)
    fairy = conn.connection
    if is_outage(exc) or (driver_error and conn.dialect.is_disconnect(cast(Any, exc), fairy.dbapi_connection, cursor)):
        conn.engine.pool._invalidate(fairy, exc)  # what SQLAlchemy does on a disconnect: the others are stale too
        conn.invalidate(exc)
        return OperationalError(sql, args, exc, connection_invalidated=True)
    if driver_error and is_rolled_back(exc):
        return RolledBack(sql, args, exc)
    if driver_error:
        return DBAPIError.instance(sql, args, exc, dbapi.Error)
    return exc
