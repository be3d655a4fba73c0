"""Read the audit trail with filters (admin page, API and exports share this)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.storage.models import AuditEntry, iso_utc


@dataclass(frozen=True, slots=True)
class AuditFilter:
    user: str | None = None
    tier: str | None = None
    result: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def apply(self, stmt: Select) -> Select:
        if self.user:
            stmt = stmt.where(or_(AuditEntry.subject == self.user, AuditEntry.actor == self.user))
        if self.tier:
            stmt = stmt.where(or_(AuditEntry.to_tier == self.tier, AuditEntry.from_tier == self.tier))
        if self.result:
            stmt = stmt.where(AuditEntry.result == self.result)
        if self.action:
            stmt = stmt.where(AuditEntry.action == self.action)
        if self.since:
            stmt = stmt.where(AuditEntry.at >= self.since)
        if self.until:
            stmt = stmt.where(AuditEntry.at < self.until)
        return stmt


async def recent(db: AsyncSession, where: AuditFilter, *, limit: int = 200, before_id: int | None = None) -> list[AuditEntry]:
    """Newest first, ``limit`` at most, older than ``before_id`` when paging."""
    stmt = where.apply(select(AuditEntry)).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    return list(await db.scalars(stmt))


async def stream_all(db: AsyncSession, where: AuditFilter, batch: int = 1000) -> AsyncIterator[AuditEntry]:
    """Oldest first, in batches, for exports and verification."""
    last = 0
    while True:
        stmt = where.apply(select(AuditEntry)).where(AuditEntry.id > last).order_by(AuditEntry.id).limit(batch)
        rows = list(await db.scalars(stmt))
        for row in rows:
            yield row
        if len(rows) < batch:
            return
        last = rows[-1].id


def entry_public(entry: AuditEntry) -> dict:
    import json

    return {
        "id": entry.id,
        "at": iso_utc(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "from_tier": entry.from_tier,
        "to_tier": entry.to_tier,
        "result": entry.result,
        "reason": entry.reason,
        "latency_ms": entry.latency_ms,
        "request_id": entry.request_id,
        "details": json.loads(entry.details) if entry.details else None,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
