"""Rate limits (SPEC F8) through the `limits` library.

The storage is chosen once at start-up: in memory for one instance, Redis when
``KYNSEY_REDIS_URL`` is set, where the moving window is kept by an atomic
script so the limit holds exactly across instances. Redis keys start with
``KYNSEY_REDIS_PREFIX``.

When Redis fails or freezes, limits fail *open to this instance's memory*:
each call to Redis is bounded by ``KYNSEY_REDIS_TIMEOUT``; on a failure the
limiter counts in memory for ``KYNSEY_REDIS_RETRY_SECONDS`` and then tries
Redis again, logging the outage once and counting it in
``kynsey_redis_errors_total`` (``kynsey_ratelimit_fallback`` is 1 meanwhile).
Why: a rate limit protects the models from a flood; refusing every chat and
switch because the limit's store is down would turn a Redis outage into a
full outage. During the fallback each instance holds the limit on its own, so
N instances let through at most N times the limit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from kynsey.errors import RateLimited
from kynsey.metrics import Metrics

log = logging.getLogger(__name__)
STORE_ERRORS = (StorageError, TimeoutError, OSError)


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


def make_storage(redis_url: str | None, *, prefix: str = "kynsey", timeout: float = 0.25) -> Storage:
    if not redis_url:
        return MemoryStorage()
    uri = redis_url.replace("redis://", "async+redis://", 1).replace("rediss://", "async+rediss://", 1)
    return RedisStorage(uri, implementation="redispy", key_prefix=prefix, wrap_exceptions=True,
                        socket_timeout=timeout, socket_connect_timeout=timeout)


class RateLimiter:
    def __init__(self, storage: Storage, *, timeout: float = 0.25, retry_seconds: float = 2.0,
                 metrics: Metrics | None = None) -> None:
        self.storage = storage
        self.shared = not isinstance(storage, MemoryStorage)
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.metrics = metrics
        self._limiter = MovingWindowRateLimiter(storage)
        self._local = MovingWindowRateLimiter(MemoryStorage()) if self.shared else self._limiter
        self._down_until = 0.0
        self._down_reason: str | None = None
        self._parsed: dict[str, RateLimitItem] = {}

    @property
    def degraded(self) -> str | None:
        """Why limits are counted in memory instead of Redis now, or None."""
        return self._down_reason if time.monotonic() < self._down_until else None

    async def hit(self, rate: str, scope: str, *keys: str) -> RateInfo:
        """Count one request against ``rate`` for ``keys``; raise RateLimited past it."""
        item = self._parsed.get(rate) or self._parsed.setdefault(rate, parse(rate))
        allowed, stats = await self._count(item, (scope, *keys))
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

    async def _count(self, item, identifiers: tuple[str, ...], *, only_test: bool = False):
        """(allowed, window stats) from Redis, or from memory while Redis fails."""

        async def count(limiter: MovingWindowRateLimiter):
            allowed = await (limiter.test if only_test else limiter.hit)(item, *identifiers)
            return allowed, await limiter.get_window_stats(item, *identifiers)

        if self.shared and not self.degraded:
            try:
                async with asyncio.timeout(self.timeout):
                    return await count(self._limiter)
            except STORE_ERRORS as exc:
                self._store_failed(exc)
        return await count(self._local)

    def _store_failed(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} (no answer within {self.timeout:g} s)"
        if self._down_reason is None or time.monotonic() >= self._down_until:
            log.warning("Redis does not answer (%s): rate limits count in this instance's memory for %g s",
                        reason, self.retry_seconds)
        self._down_until = time.monotonic() + self.retry_seconds
        self._down_reason = reason
        if self.metrics is not None:
            self.metrics.redis_error()

    async def check(self) -> tuple[bool, str | None]:
        """(ok, error) for /readyz: does the shared store answer within the timeout?"""
        if not self.shared:
            return True, None
        try:
            async with asyncio.timeout(self.timeout):
                ok = await self.storage.check()
        except STORE_ERRORS as exc:
            return False, f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer within {self.timeout:g} s"
        return ok, None if ok else "Redis did not answer PING"

    async def ensure_room(self, rate: str, scope: str, *keys: str) -> None:
        """Raise RateLimited when ``keys`` used up ``rate``, counting nothing: login limits
        count failures only, yet refuse the next attempt before its password is checked."""
        item = self._parsed.get(rate) or self._parsed.setdefault(rate, parse(rate))
        allowed, stats = await self._count(item, (scope, *keys), only_test=True)
        if allowed:
            return
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
