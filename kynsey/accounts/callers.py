"""Who is calling, kept for a moment: the user behind an API token or a browser session (SPEC N2).

Every request names its caller, and looking one up is a database round trip: on
PostgreSQL about a third of a millisecond of every reply's first token and, at
200 streams, a tenth of Kynsey's CPU. So a caller found is kept for
``auth_cache_seconds`` (1 s by default, inside the flag cache's 2 s), never past
its token's or session's expiry, and handed out as a fresh copy each time.

What changes a caller counts here from the next request on when it is made on
this instance: any write to users, API tokens or sessions (a revocation, a
disabled account, a plan, a tier, a logout) forgets every kept caller when it
runs and again when it commits, and a lookup that was under way meanwhile keeps
nothing. A change made elsewhere (another instance, the CLI) counts here within
``auth_cache_seconds``. A refused caller is never kept: a new token works at once.

Requests that miss the same caller at the same moment (a burst from one API
client, or every request after a change) share one lookup instead of each
running its own; one that arrives after a change does not join a lookup begun
before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine

from kynsey.storage.models import User, as_utc

T = TypeVar("T")
CALLER_TABLES = frozenset({"users", "api_tokens", "web_sessions"})
# The execution option of a write to those tables that changes no caller (a token's last use).
CHANGES_NO_CALLER = "kynsey_changes_no_caller"
MAX_KEPT = 10_000  # past it, everything kept is dropped: a flood of callers costs lookups, not memory
_CHANGED = "kynsey_callers_changed"


_USER_KEYS = tuple(column.key for column in User.__table__.columns)
_new_user = User.__mapper__.class_manager.new_instance


def copy_user(user: User) -> User:
    """A User of its own (not in any session), so that no request sees another one's changes to
    it. Made as the ORM makes an object before loading a row into it: User's constructor sets each
    column through its instrumentation, 42 us against 9 us this way, on every request."""
    copy = _new_user()
    copy.__dict__.update({key: getattr(user, key) for key in _USER_KEYS})
    return copy


class _Abandoned(Exception):
    """The lookup others joined was cancelled with its request."""


class Callers:
    """Callers found by a key (a token's or session's digest), each kept until its deadline."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._kept: dict[str, tuple[float, Any]] = {}
        self._generation = 0  # moves on whenever a caller may have changed
        self._lookups: dict[str, asyncio.Future] = {}  # under way since the last change, by key

    async def find(self, key: str, lookup: Callable[[], Awaitable[T]],
                   until: Callable[[T], datetime | None]) -> tuple[T, bool]:
        """What ``lookup`` answers for ``key``, kept while ``ttl`` and ``until(answer)`` allow, and
        whether this call looked it up (not kept, nor shared with a lookup under way). Its
        exceptions (a refused caller) pass through, to every call that shared it, and nothing
        is kept of them."""
        while True:
            hit = self._kept.get(key)
            if hit is not None:
                if self._clock() < hit[0]:
                    return hit[1], False
                del self._kept[key]
            under_way = self._lookups.get(key)
            if under_way is None:
                return await self._look_up(key, lookup, until), True
            try:
                return await asyncio.shield(under_way), False  # shielded: leaving must not end it for the rest
            except _Abandoned:  # the request that looked it up left before its answer: start over
                continue

    async def _look_up(self, key: str, lookup: Callable[[], Awaitable[T]], until: Callable[[T], datetime | None]) -> T:
        generation = self._generation
        shared: asyncio.Future = asyncio.get_running_loop().create_future()
        self._lookups[key] = shared
        try:
            found = await lookup()
        except BaseException as exc:
            shared.set_exception(_Abandoned() if isinstance(exc, asyncio.CancelledError) else exc)
            shared.exception()  # retrieved: no one may have joined
            raise
        finally:
            if self._lookups.get(key) is shared:  # not one a change made way for since
                del self._lookups[key]
        shared.set_result(found)
        if self.ttl > 0 and generation == self._generation:
            deadline = self._clock() + self.ttl
            ends = until(found)
            if ends is not None:
                deadline = min(deadline, self._clock() + (as_utc(ends) - datetime.now(UTC)).total_seconds())
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()
            self._kept[key] = (deadline, found)
        return found

    def forget_all(self) -> None:
        self._generation += 1
        self._kept.clear()
        self._lookups.clear()  # a lookup under way still answers the calls that joined it, not later ones

    def watch(self, engine: Engine) -> None:
        """Forget every caller when a write to a caller table runs on ``engine``, and again when it commits
        (a lookup between the two read what was there before). Only for engines used on the event loop's thread."""
        event.listen(engine, "after_cursor_execute", self._on_execute)
        # Not on rollback: what it undid changed nothing, and an invalidated connection has no info to read
        # (the flag left on the connection costs one more forgetting at its next commit).
        event.listen(engine, "commit", self._on_commit)

    def _on_execute(self, conn, _cursor, _statement, _parameters, context, _executemany) -> None:
        if not (context.isinsert or context.isupdate or context.isdelete):
            return
        table = getattr(getattr(context.compiled, "statement", None), "table", None)
        if getattr(table, "name", None) in CALLER_TABLES and not context.execution_options.get(CHANGES_NO_CALLER):
            conn.info[_CHANGED] = True
            self.forget_all()

    def _on_commit(self, conn) -> None:
        if conn.info.pop(_CHANGED, False):
            self.forget_all()
