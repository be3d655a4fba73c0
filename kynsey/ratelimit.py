"""Rate limits (SPEC F8) through the `limits` library.

The storage is chosen once at start-up: in memory for one instance, Redis when
``KYNSEY_REDIS_URL`` is set, where the moving window is kept by an atomic
script so the limit holds exactly across instances. Redis keys start with
``KYNSEY_REDIS_PREFIX``.

In memory the windows are ``LocalWindows`` (below), not the library's
MemoryStorage: after each hit, limits 5.8's MemoryStorage starts a task that
hops to a thread for every key it holds, to trim their windows. On this
2-core machine that cost 0.3-0.6 ms of CPU and about 0.4 ms of time to first
token per chat request (an A/B run of /v1 with that task disabled).

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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, WindowStats, parse
from limits.aio.storage import RedisStorage, Storage
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


class LocalWindows:
    """Moving windows in this process's memory, answering as limits' MovingWindowRateLimiter does.

    A key's window is the times of its hits, oldest first; the hits that left the window are
    dropped when the key is next counted, and keys with empty windows once a minute."""

    SWEEP_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[float, deque[float]]] = {}  # key -> (window seconds, hit times)
        self._next_sweep = clock() + self.SWEEP_SECONDS

    def _window(self, item: RateLimitItem, identifiers: tuple[str, ...], now: float) -> deque[float]:
        if now >= self._next_sweep:
            self._sweep(now)
        key = item.key_for(*identifiers)
        found = self._windows.get(key)
        if found is None:
            found = self._windows[key] = (item.get_expiry(), deque())
        start = now - found[0]
        hits = found[1]
        while hits and hits[0] <= start:
            hits.popleft()
        return hits

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_SECONDS
        for key, (seconds, hits) in list(self._windows.items()):
            if not hits or hits[-1] <= now - seconds:
                del self._windows[key]

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        now = self._clock()
        hits = self._window(item, identifiers, now)
        if len(hits) >= item.amount:
            return False
        hits.append(now)
        return True

    async def test(self, item: RateLimitItem, *identifiers: str) -> bool:
        return len(self._window(item, identifiers, self._clock())) < item.amount

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        now = self._clock()
        hits = self._window(item, identifiers, now)
        oldest = hits[0] if hits else now
        return WindowStats(time.time() + (oldest - now) + item.get_expiry(), max(0, item.amount - len(hits)))


def make_storage(redis_url: str | None, *, prefix: str = "kynsey", timeout: float = 0.25) -> Storage | None:
    """Redis when a URL is given; None for this process's memory (``LocalWindows``)."""
    if not redis_url:
        return None
    uri = redis_url.replace("redis://", "async+redis://", 1).replace("rediss://", "async+rediss://", 1)
    return RedisStorage(uri, implementation="redispy", key_prefix=prefix, wrap_exceptions=True,
                        socket_timeout=timeout, socket_connect_timeout=timeout)


class RateLimiter:
    def __init__(self, storage: Storage | None, *, timeout: float = 0.25, retry_seconds: float = 2.0,
                 metrics: Metrics | None = None) -> None:
        self.storage = storage
        self.shared = storage is not None
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.metrics = metrics
        self._local = LocalWindows()
        self._limiter = MovingWindowRateLimiter(storage) if storage is not None else self._local
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

        async def count(limiter: MovingWindowRateLimiter | LocalWindows):
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
        if self.storage is None:
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
