"""Keep streaming replies saved, and mark those whose writer died (SPEC F5, N3, N6).

Saving: every ``chat_flush_seconds`` one transaction writes the text of every
reply that grew meanwhile, however many streams run (a write per stream per
interval would cost hundreds of transactions a second at 200 streams), and the
final state of every reply whose own final save failed. Progress writes touch
only rows still 'streaming', so a late flush never overwrites a final save.

Nothing is dropped when the database fails: text that could not be written
stays dirty, and a final state that could not be written stays in
``LiveReplies.unsaved`` (the reply itself stays in memory, readable and
re-attachable); both are retried every interval until the database answers.
A flush that fails because the database is down (``OUTAGES``: also no free connection) also
ends every streaming reply at once with an ``error`` event (SPEC N6): clients
must not keep reading text that cannot be saved. So what a client saw is in the
database, minus at most one flush interval, even if the process dies while the
database is down.

A database that answers but refuses the batch (a deadlock, or a value one reply
holds that it cannot store) is no outage: each reply is then saved on its own,
so that one cannot hold back the others. A reply the database refuses on its
own would be refused at every flush: it stops (``database_refused``), and its
row ends 'interrupted' with the text saved before.

Recovery: each instance touches the replies it is writing every few seconds; any reply
still 'streaming' whose row has not been touched for ``stream_stale_seconds``
lost its writer (a killed process) and is marked interrupted. This holds when
several instances share the database, since none touches another's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from kynsey.chat.live import LiveReplies
from kynsey.chat.store import save_replies, set_reply, sweep_orphans
from kynsey.storage.db import OUTAGES
from kynsey.storage.jobs import Jobs
from kynsey.storage.periodic import every

log = logging.getLogger(__name__)
ORPHANED = "the server stopped while writing this reply"
REFUSED = "the database refuses to store this reply, so it stops here; the text saved before is kept"
# How long a finished reply waits for its final save before the client is told the save is pending.
FINAL_SAVE_WAIT = 2.0


class ReplyStore:
    """The writer of replies after their row exists: progress, final states, recovery."""

    def __init__(self, jobs: Jobs, live: LiveReplies, *, flush_seconds: float, stale_seconds: float) -> None:
        self.jobs = jobs
        self.live = live
        self.flush_seconds = flush_seconds
        self.stale_seconds = stale_seconds
        self._saves: set[asyncio.Task] = set()
        self._flushing = asyncio.Lock()  # one flush at a time: an append must not be sent twice

    async def update(self, message_id: str, **values: Any) -> None:
        """Change a reply's row now (its tier when a fallback answers); raises on a database error."""
        await self.jobs.write(set_reply(message_id, {"updated_at": _now(), **values}))

    async def save_final(self, message_id: str, **values: Any) -> bool:
        """Write a reply's final state; True once it is stored.

        From the moment this is called the final state is what readers see
        (``LiveReplies.overlay``). False when the database did not take it within
        ``FINAL_SAVE_WAIT`` s: it is kept in memory and written by the next flush that succeeds.
        """
        values["updated_at"] = _now()
        self.live.unsaved[message_id] = values
        if (reply := self.live.get(message_id)) is not None:
            reply.ended = values
        self.live.dirty.discard(message_id)  # its final state holds the whole text: no flush appends it again
        task = asyncio.create_task(self._write_final(message_id, values), name=f"save reply {message_id}")
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)
        done, _ = await asyncio.wait({task}, timeout=FINAL_SAVE_WAIT)
        return bool(done) and task.result()

    async def _write_final(self, message_id: str, values: dict[str, Any]) -> bool:
        try:
            await self.jobs.write(set_reply(message_id, values))
        except SQLAlchemyError as exc:
            log.warning("could not save reply %s (kept in memory, retried every flush): %s", message_id, exc)
            return False
        if self.live.unsaved.get(message_id) is values:
            self.live.saved(message_id)
        return True

    async def flush(self) -> int:
        """Save every final state still pending and the text of every reply that grew."""
        async with self._flushing:
            try:
                return await self._flush()
            except OUTAGES:
                raise
            except SQLAlchemyError as exc:
                pending = {*self.live.unsaved, *self.live.dirty}
                log.warning("the database refused a flush of %d replies, so each is saved alone: %s", len(pending), exc)
                return await self._flush_apart(pending)

    async def _flush_apart(self, pending: set[str]) -> int:
        """A transaction per pending reply; a reply refused on its own is given up (``_refused``)."""
        saved = 0
        for mid in pending:
            try:
                saved += await self._flush((mid,))
            except OUTAGES:
                raise
            except SQLAlchemyError as exc:
                await self._refused(mid, exc)
        return saved

    async def _refused(self, mid: str, exc: SQLAlchemyError) -> None:
        """The database refuses ``mid``'s row on its own, and would at every flush: stop the reply,
        stop saving its text, and end its row with the text it holds (should even that be refused,
        the recovery sweep ends it once the reply is gone)."""
        log.error("the database refuses to save reply %s, so it stops with the text saved before: %s", mid, exc)
        self.live.cancel(mid, "refused")
        self.live.dirty.discard(mid)
        self.live.saved(mid)  # its final state: not saved, and never will be
        with contextlib.suppress(SQLAlchemyError):
            await self.jobs.write(set_reply(mid, {"status": "interrupted", "error": REFUSED, "updated_at": _now()}))

    async def _flush(self, only: Collection[str] | None = None) -> int:
        """One transaction for every pending reply, or for those in ``only``."""
        if only is None:
            finals = dict(self.live.unsaved)
            dirty, self.live.dirty = self.live.dirty, set()
        else:
            finals = {mid: self.live.unsaved[mid] for mid in only if mid in self.live.unsaved}
            dirty = self.live.dirty.intersection(only)
            self.live.dirty -= dirty
        now, whole, appended, sent = _now(), [], [], {}
        for mid in dirty:
            if mid in finals or (r := self.live.get(mid)) is None:
                continue
            sent[mid] = count = len(r.parts)
            if r.saved_parts is None:
                whole.append({"mid": mid, "text": "".join(r.parts[:count]), "now": now})
            else:
                appended.append({"mid": mid, "delta": "".join(r.parts[r.saved_parts:count]), "now": now})
        if not finals and not sent:
            return 0
        try:
            await self.jobs.run(save_replies(finals, whole, appended))
        except BaseException as exc:
            self.live.dirty |= dirty  # nothing is dropped: the next flush tries again
            for mid in sent:  # it may have been written before the error: write these whole next time
                if (r := self.live.get(mid)) is not None:
                    r.saved_parts = None
            if isinstance(exc, OUTAGES) and sent:
                # Text that cannot be saved must not keep streaming to clients: end those replies
                # now; what they wrote stays here and is saved when the database answers.
                stopped = self.live.stop_all("database")
                log.error("the database does not answer: stopped %d streaming replies (kept in memory)", stopped)
            raise
        for mid, count in sent.items():
            if (r := self.live.get(mid)) is not None:
                r.saved_parts = count
        for mid, values in finals.items():
            if self.live.unsaved.get(mid) is values:
                self.live.saved(mid)
        return len(finals) + len(sent)

    async def sweep(self) -> int:
        now = _now()
        cutoff = now - timedelta(seconds=self.stale_seconds)
        orphans = await self.jobs.run(sweep_orphans(list(self.live.replies), now, cutoff, ORPHANED))
        if orphans:
            log.warning("marked %d orphaned replies as interrupted", orphans)
        return orphans

    async def run_forever(self) -> None:
        """The flusher and the recovery sweep, for the life of the runtime."""
        await asyncio.gather(
            every(self.flush_seconds, self.flush, "saving streaming replies", log),
            every(max(0.1, self.stale_seconds / 3), self.sweep, "reply recovery sweep", log),
        )

    async def close(self, timeout: float) -> None:
        """A last flush at shutdown, bounded in time; what the database does not take is lost with the process."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*self._saves, return_exceptions=True)
                await self.flush()
        except (SQLAlchemyError, TimeoutError, OSError) as exc:
            log.error("%d replies could not be saved before shutdown: %s", len(self.live.unsaved) + len(self.live.dirty), exc)


def _now() -> datetime:
    return datetime.now(UTC)
