"""Short database jobs on the hot path, each run whole in one step (SPEC N2).

A job is a plain function of a SQLAlchemy ``Connection`` that runs a few
statements; it runs in one transaction, committed when it returns. How it runs
is chosen once at start-up, by the database:

- SQLite: on one thread of our own, holding one connection: every job is one
  hop off the event loop (not one per statement, as through aiosqlite), and the
  jobs are this process's single SQLite writer, in order, so hundreds of
  concurrent chats never fight over SQLite's lock (its busy handler is neither
  fair nor fast). That writer does not checkpoint the write-ahead log after its
  commits, as SQLite would every 1,000 pages (copying them into the database and
  syncing it: about 6 ms, on whichever reply's turn crossed the mark, 1 request in
  150 when each opens a conversation). A thread of its own does, every
  ``CHECKPOINT_SECONDS``, beside the writer (``run_forever``); the writer checkpoints
  itself only past ``BACKSTOP_PAGES``, should that thread fall behind.
- PostgreSQL: on a pooled asyncpg connection through ``run_sync``, whose
  statements are round trips anyway; the database serialises what it must.
  BEGIN and COMMIT are round trips too: a job whose writes are one statement
  (``write``; ``storage/dml.py`` makes several writes one) runs without them.

The chat path (auth, a turn's reads and inserts, reply progress and final
saves) runs through here; the rest of Kynsey uses ordinary sessions.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from kynsey.storage.db import outage_as_operational_error, sqlite_pragmas
from kynsey.storage.periodic import every

T = TypeVar("T")
Job = Callable[[Connection], T]
log = logging.getLogger(__name__)
CHECKPOINT_SECONDS = 1.0
BACKSTOP_PAGES = 10_000  # SQLite's own default is 1,000 pages (4 MB)


class Jobs(ABC):
    @abstractmethod
    async def run(self, job: Job[T]) -> T:
        """Run ``job`` in a transaction of its own; its result, or its exception."""

    async def read(self, job: Job[T]) -> T:
        """Run ``job``, which only reads; as ``run`` unless the database allows better."""
        return await self.run(job)

    async def write(self, job: Job[T]) -> T:
        """Run ``job``, whose writes are one statement (atomic on its own, as every statement is),
        after reads that need not be in its transaction; as ``run`` unless the database allows better."""
        return await self.run(job)

    async def run_forever(self) -> None:
        """Background upkeep the database needs, for the life of the runtime (none by default)."""

    async def aclose(self) -> None:
        """Release the connection(s)."""


class SqliteJobs(Jobs):
    """One thread, one connection: jobs run one after another, each in one hop.

    A read-only job runs on the event loop itself, on a connection of its own, in
    microseconds: in WAL mode a reader never waits for a writer. Should the file
    not be in WAL mode (some filesystems refuse it), a reader that finds the
    database locked gives up at once and goes through the thread instead.
    """

    def __init__(self, url: str) -> None:
        sync_url = make_url(url).set(drivername="sqlite")
        self.engine = _sqlite_engine(sync_url, busy_ms=None, pragmas=(f"wal_autocheckpoint={BACKSTOP_PAGES}",))
        self.reader = _sqlite_engine(sync_url, busy_ms=0)
        self.checkpointer = _sqlite_engine(sync_url, busy_ms=0)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kynsey-sqlite")
        self._checkpoints = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kynsey-sqlite-checkpoint")

    async def run(self, job: Job[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._transaction, job)

    async def read(self, job: Job[T]) -> T:
        try:
            with self.reader.connect() as conn:
                return job(conn)
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
        return await self.run(job)

    def _transaction(self, job: Job[T]) -> T:
        with self.engine.begin() as conn:
            return job(conn)

    async def checkpoint(self) -> tuple[int, int, int]:
        """Copy what the write-ahead log holds into the database, beside the writer (a PASSIVE
        checkpoint waits for no one): SQLite's (busy, log pages, pages checkpointed)."""
        return await asyncio.get_running_loop().run_in_executor(self._checkpoints, self._checkpoint)

    def _checkpoint(self) -> tuple[int, int, int]:
        with self.checkpointer.connect() as conn:
            busy, pages, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
            return busy, pages, done

    async def run_forever(self) -> None:
        # Should it fail (a full disk, say), the writer's backstop still checkpoints.
        await every(CHECKPOINT_SECONDS, self.checkpoint, "checkpointing the SQLite log", log)

    async def aclose(self) -> None:
        self.reader.dispose()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._checkpoints, self.checkpointer.dispose)
        self._checkpoints.shutdown(wait=True)
        await loop.run_in_executor(self._thread, self.engine.dispose)
        self._thread.shutdown(wait=True)


def _sqlite_engine(url, *, busy_ms: int | None, pragmas: tuple[str, ...] = ()) -> Engine:
    """A one-connection engine; ``busy_ms`` overrides the busy timeout (0: fail at once when locked),
    and ``pragmas`` are set on its connection after the usual ones."""
    engine = create_engine(url, pool_size=1, max_overflow=0, pool_timeout=60, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", sqlite_pragmas)
    if busy_ms is not None:
        pragmas = (f"busy_timeout={busy_ms}", *pragmas)
    for pragma in pragmas:
        event.listen(engine, "connect", _setting(pragma))
    event.listen(engine, "handle_error", outage_as_operational_error)
    return engine


def _setting(pragma: str) -> Callable[..., None]:
    return lambda dbapi, _record: dbapi.execute(f"PRAGMA {pragma}")


class PooledJobs(Jobs):
    """A pooled connection of the async engine per job; its statements are round trips anyway."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, job: Job[T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(job)

    async def read(self, job: Job[T]) -> T:
        """In autocommit: a read needs no BEGIN and COMMIT, two round trips fewer.

        Checkout, the job and the release run in one greenlet, as ``run_sync`` runs the job alone:
        0.15 against 0.20 ms for one statement, since each ``await`` on an ``AsyncConnection`` is a
        greenlet of its own. (``run`` keeps them: its release is a COMMIT or ROLLBACK round trip,
        which ``AsyncConnection`` shields from cancellation. In autocommit there is none to cancel.)"""
        return await greenlet_spawn(self._autocommit, job)

    def _autocommit(self, job: Job[T]) -> T:
        with self.engine.sync_engine.connect() as conn:
            return job(conn.execution_options(isolation_level="AUTOCOMMIT"))

    async def write(self, job: Job[T]) -> T:
        """In autocommit too: one write statement is committed on its own."""
        return await self.read(job)


def make_jobs(url: str, engine: AsyncEngine) -> Jobs:
    if make_url(url).get_backend_name() == "sqlite":
        return SqliteJobs(url)
    return PooledJobs(engine)
