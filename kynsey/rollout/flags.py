"""The ``model_switching`` feature flag (SPEC F10).

A flag is ``off``, ``on``, or ``percentage``: on for ``percent`` of users plus
an allowlist of names. The percentage is sticky: a user's bucket is a stable
hash of the flag and their name, and they are in when ``bucket < percent``,
so raising 25 -> 50 keeps everyone who was in. ``off`` means off for everyone,
allowlist included: it is the kill switch.

The flag lives in the database (shared by every instance) and is cached here
for ``flag_cache_seconds``: evaluating it costs no database round trip per
request, and a change made by another instance is seen within that time.
With no row stored the flag is on for everyone. A request that finds the
cached state past half its time has it read again in the background, so that
under steady traffic no request waits for that read (it had put a database
read into one reply's first token every two seconds); a read that started
before a change made here is dropped, so it cannot bring back what the change
replaced (a kill by the guard, above all).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kynsey.audit import AuditRecord, append
from kynsey.errors import InvalidRequest, NotFound
from kynsey.metrics import Metrics
from kynsey.storage.dml import rows_changed
from kynsey.storage.models import FeatureFlag, as_utc, iso_utc

if TYPE_CHECKING:
    from kynsey.storage.models import User

log = logging.getLogger(__name__)

FLAG = "model_switching"
KNOWN_FLAGS = (FLAG,)
STATES = ("off", "on", "percentage")
MAX_ALLOW = 1000


def bucket(flag: str, user_name: str) -> float:
    """The user's sticky place in the rollout, 0.00-99.99."""
    digest = hashlib.sha256(f"{flag}:{user_name}".encode()).hexdigest()
    return int(digest, 16) % 10000 / 100


@dataclass(frozen=True, slots=True)
class FlagState:
    name: str
    state: str = "on"
    percent: float = 100.0
    allow: tuple[str, ...] = ()
    updated_at: datetime | None = None
    updated_by: str | None = None
    enabled_at: datetime | None = None  # last time an admin turned it on from off
    rollback_at: datetime | None = None  # last automatic rollback
    last_rollback: dict | None = None
    stored: bool = False

    @property
    def enabled(self) -> bool:
        """On for at least someone."""
        return self.state == "on" or (self.state == "percentage" and (self.percent > 0 or bool(self.allow)))

    @property
    def effective_percent(self) -> float:
        return {"on": 100.0, "off": 0.0}.get(self.state, self.percent)

    @property
    def killed(self) -> bool:
        """The guard's rollback is newer than the last re-enable (the admin page's banner)."""
        return self.rollback_at is not None and (self.enabled_at is None or self.rollback_at > self.enabled_at)

    def includes(self, user_name: str) -> bool:
        if self.state != "percentage":
            return self.state == "on"
        return user_name in self.allow or bucket(self.name, user_name) < self.percent

    def summary(self) -> dict[str, Any]:
        return {"state": self.state, "percent": self.percent, "allow": list(self.allow)}

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.summary(),
            "enabled": self.enabled,
            "effective_percent": self.effective_percent,
            "stored": self.stored,
            "updated_at": iso_utc(self.updated_at),
            "updated_by": self.updated_by,
            "enabled_at": iso_utc(self.enabled_at),
            "rollback_at": iso_utc(self.rollback_at),
            "last_rollback": self.last_rollback,
            "killed": self.killed,
        }

    def describe(self) -> str:
        if self.state == "percentage":
            extra = f" plus {len(self.allow)} allowlisted" if self.allow else ""
            return f"{self.name}: on for {self.percent:g}% of users{extra}"
        return f"{self.name}: {self.state}"


def check_name(name: str) -> str:
    if name not in KNOWN_FLAGS:
        raise NotFound(f"there is no flag '{name}'; flags: {', '.join(KNOWN_FLAGS)}", flag=name)
    return name


def from_row(name: str, row: FeatureFlag | None) -> FlagState:
    if row is None:
        return FlagState(name)
    return FlagState(
        name=name,
        state=row.state,
        percent=float(row.percent),
        allow=tuple(json.loads(row.allowlist or "[]")),
        updated_at=as_utc(row.updated_at),
        updated_by=row.updated_by,
        enabled_at=as_utc(row.enabled_at),
        rollback_at=as_utc(row.rollback_at),
        last_rollback=json.loads(row.last_rollback) if row.last_rollback else None,
        stored=True,
    )


def _allowlist(names: list[str]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    if len(cleaned) > MAX_ALLOW or any(len(n) > 64 for n in cleaned):
        raise InvalidRequest(f"an allowlist holds at most {MAX_ALLOW} user names of at most 64 characters", field="allow")
    return cleaned


def changed(before: FlagState, state: str | None, percent: float | None, allow: list[str] | None) -> FlagState:
    """``before`` with an admin's change applied, validated."""
    if state is not None and state not in STATES:
        raise InvalidRequest(f"a flag state is one of {', '.join(STATES)}, not '{state}'", field="state")
    if percent is not None:
        if not math.isfinite(percent) or not 0 <= percent <= 100:
            raise InvalidRequest("percent must be between 0 and 100", field="percent")
        if state not in (None, "percentage"):
            raise InvalidRequest(f"a percentage goes with state 'percentage', not '{state}'", field="percent")
        state = "percentage"
    after = before
    if state == "on":
        after = replace(after, state="on", percent=100.0)
    elif state is not None:
        after = replace(after, state=state, percent=round(percent if percent is not None else before.percent, 2))
    if allow is not None:
        after = replace(after, allow=_allowlist(allow))
    return after


class Flags:
    """Read flags through a short per-instance cache; change them with an audit entry."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ttl: float,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.metrics = metrics
        self._clock = clock
        self._cache: dict[str, tuple[float, FlagState]] = {}
        self._lock = asyncio.Lock()
        self._remembered = 0  # moves on with every state stored: a read started before one is stale
        self._reading: dict[str, asyncio.Task] = {}
        self.listeners: list[Callable[[FlagState], None]] = []

    def peek(self, name: str = FLAG) -> FlagState | None:
        """The last state this instance read, however old (None before the first read)."""
        hit = self._cache.get(name)
        return hit[1] if hit else None

    def _fresh(self, name: str) -> FlagState | None:
        hit = self._cache.get(name)
        if hit is None:
            return None
        age = self._clock() - hit[0]
        if age >= self.ttl:
            return None
        if age >= self.ttl / 2 and name not in self._reading:
            self._reading[name] = asyncio.get_running_loop().create_task(self._read_ahead(name))
        return hit[1]

    async def aclose(self) -> None:
        """Stop the reads ahead still running."""
        reading = list(self._reading.values())
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)

    async def _read_ahead(self, name: str) -> None:
        """Read ``name`` again before its cached state expires; kept only if nothing was stored meanwhile."""
        seen = self._remembered
        try:
            async with self.sessions() as db:
                state = from_row(name, await db.get(FeatureFlag, name))
        except (SQLAlchemyError, OSError) as exc:  # the next request past the ttl reads it, and fails as it must
            log.debug("could not read the flag %s ahead: %s", name, exc)
            return
        finally:
            self._reading.pop(name, None)
        if self._remembered == seen:
            self._remember(state)

    async def get(self, name: str = FLAG) -> FlagState:
        """The flag's state, read from the database at most once per ``ttl`` seconds."""
        state = self._fresh(check_name(name))
        if state is not None:
            return state
        async with self._lock:  # one reader refreshes; the others wait for its answer
            state = self._fresh(name)
            if state is None:
                state = await self.reload(name)
        return state

    async def enabled_for(self, user: User, name: str = FLAG) -> bool:
        """Is flag ``name`` (tier switching by default) on for ``user``? No database round trip
        while the cache is fresh."""
        return (await self.get(name)).includes(user.name)

    async def reload(self, name: str = FLAG) -> FlagState:
        """Read the flag now, bypassing the cache (admin views, and after a change)."""
        async with self.sessions() as db:
            state = from_row(check_name(name), await db.get(FeatureFlag, name))
        self._remember(state)
        return state

    async def refresh(self) -> None:
        """Background refresh (keeps gauges and the guard current on an idle instance)."""
        try:
            for name in KNOWN_FLAGS:
                await self.get(name)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not read the feature flags: %s", exc)

    def _remember(self, state: FlagState) -> None:
        self._remembered += 1
        self._cache[state.name] = (self._clock(), state)
        self.metrics.flag(state.name, state.enabled, state.effective_percent)
        for listener in self.listeners:
            listener(state)

    async def set(
        self,
        name: str,
        *,
        actor: str,
        state: str | None = None,
        percent: float | None = None,
        allow: list[str] | None = None,
        request_id: str | None = None,
    ) -> FlagState:
        """Change a flag (audited, action 'flag'); turning it on from off is a re-enable."""
        check_name(name)
        async with self.sessions() as db:
            row = await db.scalar(select(FeatureFlag).where(FeatureFlag.name == name).with_for_update())
            before = from_row(name, row)
            after = changed(before, state, percent, allow)
            now = datetime.now(UTC)
            row = row or FeatureFlag(name=name)
            row.state, row.percent, row.allowlist = after.state, after.percent, json.dumps(list(after.allow))
            row.updated_at, row.updated_by = now, actor
            reenabled = not before.enabled and after.enabled
            if reenabled:
                row.enabled_at = now
            db.add(row)
            details = {"from": before.summary(), "to": after.summary(), "reenabled": reenabled}
            await append(
                db,
                AuditRecord(actor=actor, action="flag", subject=name, result="ok", reason=after.describe(),
                            request_id=request_id, details=details),
            )
            result = from_row(name, row)
        self._remember(result)
        return result

    async def kill(self, db: AsyncSession, name: str, rollback: dict) -> bool:
        """Turn ``name`` off for the guard, in ``db``'s transaction (the caller commits).

        The conditional update makes the kill happen once even when several
        instances trip together: False when the flag was already off.
        """
        now = datetime.now(UTC)
        values = dict(
            state="off", rollback_at=now, last_rollback=json.dumps(rollback, default=str), updated_at=now, updated_by="guard"
        )
        done = await rows_changed(
            db, update(FeatureFlag).where(FeatureFlag.name == name, FeatureFlag.state != "off").values(**values)
        )
        if done == 1:
            return True
        if await db.get(FeatureFlag, name) is not None:
            return False
        db.add(FeatureFlag(name=name, percent=100.0, allowlist="[]", **values))
        try:
            await db.flush()
        except IntegrityError:
            await db.rollback()
            return False
        return True
