"""The async engine and session factory, chosen once from the settings' URL.

Database faults are translated here, at the boundary, into SQLAlchemy's
``OperationalError`` whatever the driver raised (asyncpg raises a bare
``ConnectionRefusedError`` or ``TimeoutError``), so the rest of Kynsey knows
one kind of outage: the web layer answers it with 503 ``database_unavailable``
and background work retries it. Running out of connections is told apart
(``out_of_connections``): this instance's pool had none free within
``KYNSEY_DB_POOL_TIMEOUT`` (SQLAlchemy's pool ``TimeoutError``), or PostgreSQL
refused a new one (``too many clients``, SQLSTATE 53300, past ``max_connections``
or a role's ``CONNECTION LIMIT``); both answer 503 ``database_busy``. So does a transaction
that PostgreSQL rolled back to break a conflict with another one (a deadlock or a serialization
failure: ``RolledBack``), since trying it again may pass. Every connect and every statement is bounded
in time (``KYNSEY_DB_CONNECT_TIMEOUT``, ``KYNSEY_DB_STATEMENT_TIMEOUT``), so a
frozen PostgreSQL costs a request seconds, not forever.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=10000")
# PostgreSQL answers these SQLSTATEs when it cannot take work now: too many connections,
# shutting down, starting up, cannot connect now.
POOL_RECYCLE_SECONDS = 1800  # reopen long-lived connections (idle timeouts on the way)
TOO_MANY_CONNECTIONS = "53300"
UNAVAILABLE_SQLSTATES = frozenset({TOO_MANY_CONNECTIONS, "57P01", "57P02", "57P03", "08000", "08003", "08006"})
# What a database that cannot take work now raises (down, frozen, refusing connections, or no
# connection free in this instance's pool), as opposed to one that answered and refused the work:
# the web layer answers these with 503, and the flusher keeps replies in memory until they pass.
OUTAGES = (OperationalError, InterfaceError, PoolTimeout)


class RolledBack(DBAPIError):
    """PostgreSQL rolled the transaction back to break a conflict with another one (SQLSTATE class 40:
    a deadlock, a serialization failure). Nothing of it was written, and the same work may pass if
    tried again. Not an outage: the database answers."""


@dataclass(frozen=True, slots=True)
class DbLimits:
    """Timeouts and pool bounds of one engine (the settings' defaults)."""

    connect_timeout: float = 5.0
    statement_timeout: float = 15.0
    pool_size: int = 40
    max_overflow: int = 0
    pool_timeout: float = 10.0


def make_engine(url: str, limits: DbLimits = DbLimits()) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # A SQLite connection is a thread, not a server process: allow a burst of hundreds of chat starts.
        engine = create_async_engine(url, pool_size=20, max_overflow=200, pool_timeout=30)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
    else:
        engine = create_async_engine(
            url,
            pool_size=limits.pool_size,
            max_overflow=limits.max_overflow,
            pool_timeout=limits.pool_timeout,
            # No pre-ping (a round trip on every checkout, and asyncpg's raw TimeoutError escapes it):
            # the first statement that meets a dead connection invalidates the whole pool instead.
            pool_recycle=POOL_RECYCLE_SECONDS,
        )
        event.listen(engine.sync_engine, "do_connect", _bounded_connect(limits))
    event.listen(engine.sync_engine, "handle_error", outage_as_operational_error)
    return engine


def _bounded_connect(limits: DbLimits):
    """Connect with asyncpg's timeouts; a refused or silent server is an OperationalError."""

    def connect(dialect, _record, cargs, cparams):
        cparams.setdefault("timeout", limits.connect_timeout)
        cparams.setdefault("command_timeout", limits.statement_timeout)
        settings = cparams.setdefault("server_settings", {})
        settings.setdefault("statement_timeout", str(int(limits.statement_timeout * 1000)))
        try:
            return dialect.connect(*cargs, **cparams)
        except OSError as exc:  # refused, reset, or no answer within the timeout (TimeoutError)
            raise dialect.loaded_dbapi.OperationalError(f"cannot connect to the database: {_describe(exc)}") from exc
        except Exception as exc:
            if getattr(exc, "sqlstate", None) in UNAVAILABLE_SQLSTATES:  # e.g. too many clients
                raise dialect.loaded_dbapi.OperationalError(f"the database refused a connection: {exc}") from exc
            raise

    return connect


def outage_as_operational_error(context):
    """A statement that hit a dead or frozen server raises OperationalError, and its connection is dropped;
    one that PostgreSQL rolled back to break a conflict raises RolledBack."""
    original = context.original_exception
    if isinstance(context.sqlalchemy_exception, OperationalError):
        return None
    if is_rolled_back(original):
        return RolledBack(context.statement, context.parameters, original)
    if is_outage(original) or (
        isinstance(context.sqlalchemy_exception, DBAPIError) and context.sqlalchemy_exception.connection_invalidated
    ):
        context.is_disconnect = True
        return OperationalError(context.statement, context.parameters, original, connection_invalidated=True)
    return None


def is_rolled_back(exc: BaseException) -> bool:
    """Whether a driver's ``exc`` is a transaction PostgreSQL rolled back to break a conflict (class 40)."""
    return str(getattr(exc, "sqlstate", "")).startswith("40")


def is_outage(exc: BaseException) -> bool:
    """Whether a driver's ``exc`` means the server is gone, frozen or refusing work (not a bad statement)."""
    return isinstance(exc, OSError) or getattr(exc, "sqlstate", None) in UNAVAILABLE_SQLSTATES


def out_of_connections(exc: BaseException) -> bool:
    """Whether ``exc`` means no database connection was free: the pool's or the server's."""
    seen: BaseException | None = exc
    for _ in range(5):  # SQLAlchemy's error -> the driver adapter's (``orig``) -> asyncpg's (``__cause__``)
        if seen is None:
            return False
        if isinstance(seen, PoolTimeout) or getattr(seen, "sqlstate", None) == TOO_MANY_CONNECTIONS:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} (no answer in time)"


def sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
