"""One instance's rate limits in its memory (kynsey/ratelimit.py ``LocalWindows``): a moving
window, as the library's MovingWindowRateLimiter keeps it in Redis (SPEC F8)."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from limits import parse

from kynsey.errors import RateLimited
from kynsey.ratelimit import LocalWindows, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_hit_leaves_the_window_one_window_after_it_was_counted():
    clock, item = Clock(), parse("2/minute")
    windows = LocalWindows(clock)

    async def scenario():
        seen = [await windows.hit(item, "chat", "u1")]
        clock.now += 10
        seen += [await windows.hit(item, "chat", "u1"), await windows.hit(item, "chat", "u1")]
        seen.append(await windows.hit(item, "chat", "u2"))  # another key has its own window
        stats = await windows.get_window_stats(item, "chat", "u1")
        clock.now += 50  # 60 s after the first hit: it left the window, the second has not
        seen += [await windows.test(item, "chat", "u1"), await windows.hit(item, "chat", "u1"),
                 await windows.hit(item, "chat", "u1")]
        return seen, stats

    seen, stats = asyncio.run(scenario())
    assert seen == [True, True, False, True, True, True, False]
    assert stats.remaining == 0


def test_the_reset_time_is_when_the_oldest_hit_leaves_the_window():
    clock, item = Clock(), parse("3/minute")
    windows = LocalWindows(clock)

    async def scenario():
        await windows.hit(item, "k")
        clock.now += 20
        await windows.hit(item, "k")
        return await windows.get_window_stats(item, "k")

    stats = asyncio.run(scenario())
    assert stats.remaining == 1
    assert math.isclose(stats.reset_time - time.time(), 40, abs_tol=1)


def test_idle_keys_are_swept_so_memory_does_not_grow_with_callers():
    clock, item = Clock(), parse("5/second")
    windows = LocalWindows(clock)

    async def scenario():
        for user in range(1000):
            await windows.hit(item, "chat", str(user))
        clock.now += LocalWindows.SWEEP_SECONDS + 1
        await windows.hit(item, "chat", "last")

    asyncio.run(scenario())
    assert list(windows._windows) == [item.key_for("chat", "last")]


def test_past_the_limit_the_limiter_refuses_with_when_to_retry():
    limiter = RateLimiter(None)

    async def scenario():
        infos = [await limiter.hit("2/minute", "switch", "alice") for _ in range(2)]
        with pytest.raises(RateLimited) as refused:
            await limiter.hit("2/minute", "switch", "alice")
        return infos, refused.value

    infos, refused = asyncio.run(scenario())
    assert [i.remaining for i in infos] == [1, 0] and infos[0].limit == 2
    assert 59 <= refused.retry_after <= 60 and refused.headers["RateLimit-Remaining"] == "0"
    assert not limiter.shared and asyncio.run(limiter.check()) == (True, None)
