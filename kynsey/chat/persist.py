"""Keep streaming replies saved, and mark those whose writer died (SPEC F5, N3).

Saving: every ``chat_flush_seconds`` one transaction writes the text of every
reply that grew meanwhile, however many streams run (a write per stream per
interval would cost hundreds of transactions a second at 200 streams). Only
rows still 'streaming' are written, so a late flush never overwrites a
reply's final save.

Recovery: each instance touches the replies it is writing every few seconds; any reply
still 'streaming' whose row has not been touched for ``stream_stale_seconds``
lost its writer (a killed process) and is marked interrupted. This holds when
several instances share the database, since none touches another's rows.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, update

from kynsey.storage.models import Message

log = logging.getLogger(__name__)
ORPHANED = "the server stopped while writing this reply"


async def sweep(rt) -> int:
    now = datetime.now(UTC)
    async with rt.sessions() as db:
        live = list(rt.live.replies)
        if live:
            await db.execute(update(Message).where(Message.id.in_(live)).values(updated_at=now))
        cutoff = now - timedelta(seconds=rt.settings.stream_stale_seconds)
        stmt = (
            update(Message)
            .where(Message.status == "streaming", Message.updated_at < cutoff)
            .values(status="interrupted", error=ORPHANED, updated_at=now)
        )
        if live:
            stmt = stmt.where(Message.id.not_in(live))
        result = await db.execute(stmt)
        await db.commit()
    if result.rowcount:
        log.warning("marked %d orphaned replies as interrupted", result.rowcount)
    return result.rowcount


async def flush(rt) -> int:
    """Save the text of every live reply that grew since the last flush."""
    ids, rt.live.dirty = rt.live.dirty, set()
    rows = [{"mid": mid, "text": live.text} for mid in ids if (live := rt.live.get(mid)) is not None]
    if not rows:
        return 0
    stmt = (
        update(Message.__table__)
        .where(Message.__table__.c.id == bindparam("mid"), Message.__table__.c.status == "streaming")
        .values(content=bindparam("text"), updated_at=datetime.now(UTC))
    )
    async with rt.sessions() as db:
        await db.execute(stmt, rows)
        await db.commit()
    return len(rows)


async def _every(seconds: float, work, rt, what: str) -> None:
    while True:
        try:
            await work(rt)
        except Exception:  # keep going through a passing database outage; log it loudly
            log.exception("%s failed", what)
        await asyncio.sleep(seconds)


async def persist_forever(rt) -> None:
    """The flusher and the recovery sweep, for the life of the runtime."""
    await asyncio.gather(
        _every(rt.settings.chat_flush_seconds, flush, rt, "saving streaming replies"),
        _every(max(0.1, rt.settings.stream_stale_seconds / 3), sweep, rt, "reply recovery sweep"),
    )
