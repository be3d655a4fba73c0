"""Rate limits (SPEC F8) through the `limits` library.

The storage is chosen once at start-up: in memory for one instance, Redis when
``KYNSEY_REDIS_URL`` is set, where the moving window is kept by an atomic
script so the limit holds exactly across instances.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from kynsey.errors import RateLimited


@dataclass(frozen=True, slots=True)
class RateInfo:
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


def make_storage(redis_url: str | None) -> Storage:
    if not redis_url:
        return MemoryStorage()
    uri = redis_url.replace("redis://", "async+redis://", 1).replace("rediss://", "async+rediss://", 1)
    return RedisStorage(uri, implementation="redispy")


class RateLimiter:
    def __init__(self, storage: Storage, namespace: str = "kynsey") -> None:
        self.storage = storage
        self.namespace = namespace
        self._limiter = MovingWindowRateLimiter(storage)
        self._parsed: dict[str, object] = {}

    async def hit(self, rate: str, scope: str, *keys: str) -> RateInfo:
        """Count one request against ``rate`` for ``keys``; raise RateLimited past it."""
        item = self._parsed.get(rate) or self._parsed.setdefault(rate, parse(rate))
        identifiers = (self.namespace, scope, *keys)
        allowed = await self._limiter.hit(item, *identifiers)
        stats = await self._limiter.get_window_stats(item, *identifiers)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        info = RateInfo(item.amount, max(0, stats.remaining), reset)
        if not allowed:
            raise RateLimited(
                f"too many {scope} requests: the limit is {rate}; try again in {reset} s",
                retry_after=reset,
                limit=rate,
                headers=info.headers(),
            )
        return info

    async def ensure_room(self, rate: str, scope: str, *keys: str) -> None:
        """Raise RateLimited when ``keys`` used up ``rate``, counting nothing: login limits
        count failures only, yet refuse the next attempt before its password is checked."""
        item = self._parsed.get(rate) or self._parsed.setdefault(rate, parse(rate))
        identifiers = (self.namespace, scope, *keys)
        if await self._limiter.test(item, *identifiers):
            return
        stats = await self._limiter.get_window_stats(item, *identifiers)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"too many {scope} requests: the limit is {rate}; try again in {reset} s",
            retry_after=reset,
            limit=rate,
            headers=RateInfo(item.amount, 0, reset).headers(),
        )

    async def aclose(self) -> None:
        close = getattr(self.storage, "aclose", None) or getattr(self.storage, "close", None)
        if close:
            result = close()
            if hasattr(result, "__await__"):
                await result
