"""Replies whose writer died are marked interrupted, keeping their text (SPEC F5, N3).

Each instance touches the replies it is writing every few seconds; any reply
still 'streaming' whose row has not been touched for ``stream_stale_seconds``
lost its writer (a killed process) and is marked interrupted. This holds when
several instances share the database, since none touches another's rows.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

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


async def sweep_forever(rt) -> None:
    interval = max(0.1, rt.settings.stream_stale_seconds / 3)
    while True:
        try:
            await sweep(rt)
        except Exception:  # keep sweeping through a passing database outage; log it loudly
            log.exception("reply recovery sweep failed")
        await asyncio.sleep(interval)
