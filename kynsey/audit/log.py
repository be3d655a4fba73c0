"""Append entries to the audit chain.

Each entry's hash covers its own fields and the previous entry's hash, so an
altered or removed row breaks the chain where it happened. Appends are
serialised (``_chain_end_held``): in line in each process, then by SQLite's one
write lock or PostgreSQL's transaction-scoped advisory lock, so that processes
sharing the database keep one chain. There is no function here, or anywhere in
Kynsey, that updates or deletes audit rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from weakref import WeakKeyDictionary

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.storage.models import AuditEntry, as_utc, table

GENESIS = "0" * 64
_PG_LOCK_KEY = 0x6B796E73  # "kyns"
_AUDIT = table(AuditEntry)
# A write that changes nothing: on SQLite it takes the database's write lock all the same.
_SQLITE_WRITE_LOCK = update(_AUDIT).where(_AUDIT.c.id.is_(None)).values(id=_AUDIT.c.id)
# One append lock per event loop: a process serves on one, but tests run a server per thread, each on its
# own (an asyncio.Lock waited on from two loops raises RuntimeError).
_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


def _loop_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _locks.get(loop)
    if lock is None:
        lock = _locks[loop] = asyncio.Lock()
    return lock


@dataclass(frozen=True, slots=True)
class AuditRecord:
    actor: str
    action: str
    result: str
    subject: str | None = None
    from_tier: str | None = None
    to_tier: str | None = None
    reason: str | None = None
    latency_ms: float | None = None
    request_id: str | None = None
    details: dict | None = None


def _iso(moment: datetime) -> str:
    return as_utc(moment).isoformat(timespec="microseconds")


def entry_hash(prev_hash: str, at: datetime, fields: dict) -> str:
    """The chain hash of one entry: canonical JSON of its fields after the previous hash."""
    body = json.dumps({**fields, "at": _iso(at)}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def entry_fields(entry: AuditEntry) -> dict:
    """The hashed fields of a stored entry, in the form ``append`` hashed them."""
    fields = {name: getattr(entry, name) for name in AuditRecord.__slots__}
    fields["details"] = json.loads(entry.details) if entry.details else None
    if fields["latency_ms"] is not None:
        fields["latency_ms"] = round(float(fields["latency_ms"]), 3)
    return fields


async def append(db: AsyncSession, record: AuditRecord, *, check: Callable[[], Awaitable[None]] | None = None) -> AuditEntry:
    """Add ``record`` to the chain and commit it (with whatever else ``db`` holds).

    ``check`` runs first, inside the same serialisation: a rule about what other audited
    changes write (the last admin stays) sees each of them committed, on every instance.
    Its exception passes through, and nothing is committed."""
    fields = asdict(record)
    if fields["latency_ms"] is not None:
        fields["latency_ms"] = round(float(fields["latency_ms"]), 3)
    async with _chain_end_held(db):
        if check is not None:
            await check()
        prev = await db.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)) or GENESIS
        at = datetime.now(UTC)
        entry = AuditEntry(
            at=at,
            prev_hash=prev,
            hash=entry_hash(prev, at, fields),
            **{**fields, "details": json.dumps(fields["details"], sort_keys=True) if fields["details"] else None},
        )
        db.add(entry)
        await db.commit()
    return entry


@contextlib.asynccontextmanager
async def _chain_end_held(db: AsyncSession):
    """Hold the end of the chain for ``db``'s transaction, until the append commits.

    Appends wait in line (an in-process lock: first come, first served), then take the
    database's own lock: on SQLite its one write lock, which serialises writers in every
    process; on PostgreSQL a transaction-scoped advisory lock, which serialises instances.
    Whoever holds the end of the chain must never wait for a lock that one waiting behind
    it holds (neither database sees the in-process line: both would stand still for a
    timeout, 10 or 15 s, and then fail):
    - on SQLite a change that wrote before its append holds the write lock already, so it
      goes first, skipping the line;
    - on PostgreSQL a change's own writes are flushed before it waits: it takes its row
      locks first, and at the end of the chain it only reads the last hash and inserts."""
    if db.get_bind().dialect.name == "sqlite":
        if await _holds_sqlite_write_lock(db):
            yield  # no one else writes until it commits: those in line wait for it, not it for them
            return
        async with _loop_lock():
            await db.flush()  # what the change holds (a switch: the user's tier) takes the lock if anything does
            if not await _holds_sqlite_write_lock(db):
                await db.execute(_SQLITE_WRITE_LOCK)
            yield
        return
    await db.flush()
    async with _loop_lock():
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield


async def _holds_sqlite_write_lock(db: AsyncSession) -> bool:
    """Whether ``db``'s SQLite transaction has written: the driver begins one at its first write,
    which takes the write lock (changes not yet flushed are not written)."""
    driver = (await (await db.connection()).get_raw_connection()).driver_connection
    return driver is not None and bool(driver.in_transaction)
