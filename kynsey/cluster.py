"""What Kynsey instances share through Redis (SPEC N5): one connection for calls, one for pub/sub.

With ``KYNSEY_REDIS_URL`` set, circuits (``availability/circuit.py``), warm-up
single-flight (``availability/warmup.py``), the rollback guard's windows
(``rollout/guard.py``) and live replies (``chat/relay.py``) reach every
instance through this one object. Without it the same object is a no-op and
each of them keeps its state in this process, as one instance always did.

The hot path never waits on Redis: readers use local mirrors, kept fresh by
pub/sub messages and a poll every ``POLL_SECONDS``; writes (``submit``) go out
in order from one background task. A relayed token costs no round trip; a
request event (a failure, a switch, a reply's end) costs one, in the background.

When Redis fails or freezes, every call is bounded by ``KYNSEY_REDIS_TIMEOUT``;
the instance then works from its local state for ``KYNSEY_REDIS_RETRY_SECONDS``
(logged once, counted in ``kynsey_redis_errors_total``, ``kynsey_cluster_fallback``
is 1 meanwhile) and tries again. Writes made meanwhile stay local; once Redis
answers again its shared state wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from kynsey.metrics import Metrics

log = logging.getLogger(__name__)
ERRORS = (RedisError, OSError, TimeoutError)
POLL_SECONDS = 0.5  # how stale a mirror may be when a pub/sub message was lost
LISTEN_SECONDS = 1.0  # the listener wakes this often to notice an outage
QUEUE_LIMIT = 10_000  # writes waiting for Redis; past it they stay local only
Handler = Callable[[Any], None]


class Unavailable(Exception):
    """Redis is not configured, or fails now: use this instance's local state."""


class Feed:
    """Messages on one channel, for as long as the subscription lives. ``BROKEN`` ends it."""

    BROKEN = object()

    def __init__(self, cluster: Cluster, channel: str) -> None:
        self.cluster, self.channel = cluster, channel
        self.ready = asyncio.Event()  # the subscription is confirmed
        self._items: deque[Any] = deque()
        self._arrived = asyncio.Event()

    def put(self, item: Any) -> None:
        self._items.append(item)
        self._arrived.set()

    async def wait(self, timeout: float) -> bool:
        """Has a message (or ``BROKEN``) arrived within ``timeout`` s? Takes nothing."""
        if not self._items:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return False
        return True

    def broken(self) -> bool:
        return bool(self._items) and self._items[0] is Feed.BROKEN

    async def next(self, timeout: float) -> Any:
        """The next message, None after ``timeout`` s of quiet, or ``Feed.BROKEN``."""
        if not await self.wait(timeout):
            return None
        item = self._items.popleft()
        if item is Feed.BROKEN:
            self._items.appendleft(item)  # it stays broken
        return item

    async def close(self) -> None:
        await self.cluster.unfollow(self)


def model_field(backend: str, model: str) -> str:
    """A backend's model as a field of a shared hash (circuits, warm-up claims)."""
    return f"{backend}\t{model}"


def split_field(field: str) -> tuple[str, str]:
    backend, _, model = field.partition("\t")
    return backend, model


class Cluster:
    def __init__(self, redis_url: str | None, *, prefix: str = "kynsey", timeout: float = 0.25,
                 retry_seconds: float = 2.0, metrics: Metrics | None = None) -> None:
        self.shared = bool(redis_url)
        self.prefix = prefix
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self.metrics = metrics
        self.instance = uuid.uuid4().hex
        self._redis = Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout) if redis_url else None
        self._sub_redis = Redis.from_url(redis_url, socket_connect_timeout=timeout) if redis_url else None
        self._handlers: dict[str, Handler] = {}
        self._feeds: dict[str, set[Feed]] = {}
        self._polls: list[Callable[[Redis], Awaitable[None]]] = []
        self._writes: asyncio.Queue[Callable[[Redis], Awaitable[Any]]] | None = None
        self._pubsub: PubSub | None = None
        self._tasks: list[asyncio.Task] = []
        self._in_flight = 0
        self._down_until = 0.0
        self._down_reason: str | None = None

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def degraded(self) -> str | None:
        """Why this instance works from local state now, or None."""
        return self._down_reason if time.monotonic() < self._down_until else None

    @property
    def pending(self) -> int:
        """Writes not yet in Redis (a mirror poll leaves local state alone meanwhile)."""
        return self._in_flight + (self._writes.qsize() if self._writes is not None else 0)

    # -- registration (before start) ------------------------------------------------

    def on(self, channel: str, handler: Handler) -> None:
        """Call ``handler(message)`` for every message on ``key(channel)``, on this event loop."""
        self._handlers[self.key(channel)] = handler

    def every_poll(self, work: Callable[[Redis], Awaitable[None]]) -> None:
        """Run ``work(redis)`` every ``POLL_SECONDS`` while Redis answers (mirrors repair themselves)."""
        self._polls.append(work)

    # -- calls ------------------------------------------------------------------------

    async def call(self, work: Callable[[Redis], Awaitable[Any]]) -> Any:
        """``work(redis)`` within the timeout; Unavailable when Redis is off or failing."""
        if self._redis is None or self.degraded:
            raise Unavailable(self.degraded or "no Redis configured")
        try:
            async with asyncio.timeout(self.timeout):
                result = await work(self._redis)
        except ERRORS as exc:
            self._failed(exc)
            raise Unavailable(str(exc)) from exc
        self._answered()
        return result

    def submit(self, work: Callable[[Redis], Awaitable[Any]]) -> None:
        """Run ``work(redis)`` in the background, after every write submitted before it."""
        if self._writes is None or self.degraded or self._writes.qsize() >= QUEUE_LIMIT:
            return
        self._writes.put_nowait(work)

    def publish(self, channel: str, message: Any) -> None:
        """Send ``message`` (JSON) to every instance listening on ``channel``, in the background."""
        data = orjson.dumps(message)
        self.submit(lambda r: r.publish(self.key(channel), data))

    async def publish_now(self, channel: str, message: Any) -> int:
        """Send ``message`` now; how many listeners got it. Raises Unavailable."""
        data = orjson.dumps(message)
        return await self.call(lambda r: r.publish(self.key(channel), data))

    def script(self, lua: str):
        """A Lua script to call as ``await cluster.call(lambda r: script(keys=..., args=..., client=r))``."""
        return self._redis.register_script(lua) if self._redis is not None else None

    # -- subscriptions to one channel -------------------------------------------------

    async def follow(self, channel: str) -> Feed:
        """Subscribe to ``key(channel)``; Unavailable when Redis is off, failing or slow to confirm."""
        if self._sub_redis is None or self.degraded or self._pubsub is None:
            raise Unavailable(self.degraded or "no Redis subscription")
        feed = Feed(self, self.key(channel))
        listeners = self._feeds.setdefault(feed.channel, set())
        listeners.add(feed)
        try:
            async with asyncio.timeout(self.timeout):
                if len(listeners) == 1:
                    await self._pubsub.subscribe(feed.channel)
                else:
                    feed.ready.set()
                await feed.ready.wait()
        except (*ERRORS, AttributeError) as exc:
            await self.unfollow(feed)
            raise Unavailable(str(exc)) from exc
        return feed

    async def unfollow(self, feed: Feed) -> None:
        listeners = self._feeds.get(feed.channel)
        if listeners is None or feed not in listeners:
            return
        listeners.discard(feed)
        if not listeners:
            del self._feeds[feed.channel]
            if self._pubsub is not None:
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._pubsub.unsubscribe(feed.channel)
                except (*ERRORS, AttributeError):
                    pass  # the listener reconnects with the channels still followed

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.shared:
            return
        self._writes = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._write_loop(self._writes), name="kynsey-cluster-writes"),
                       asyncio.create_task(self._listen_loop(), name="kynsey-cluster-listen"),
                       asyncio.create_task(self._poll_loop(), name="kynsey-cluster-poll")]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in (self._redis, self._sub_redis):
            if client is not None:
                try:
                    await asyncio.wait_for(client.aclose(), self.timeout * 4)
                except ERRORS:
                    pass  # a frozen Redis must not hold up a shutdown

    async def _write_loop(self, writes: asyncio.Queue[Callable[[Redis], Awaitable[Any]]]) -> None:
        while True:
            work = await writes.get()
            if self.degraded:
                continue  # the local state has it; Redis's shared state wins once it is back
            self._in_flight = 1
            try:
                await self.call(work)
            except Unavailable:
                pass
            except Exception:  # a bug in one write must not stop the others
                log.exception("a shared-state write failed")
            finally:
                self._in_flight = 0

    async def _poll_loop(self) -> None:
        while True:
            if not self.degraded:
                for work in self._polls:
                    try:
                        await self.call(work)
                    except Unavailable:
                        break
                    except Exception:
                        log.exception("a shared-state poll failed")
            await asyncio.sleep(POLL_SECONDS)

    async def _listen_loop(self) -> None:
        while True:
            if self.degraded:
                await asyncio.sleep(max(0.05, self._down_until - time.monotonic()))
                continue
            try:
                await self._listen()
            except (*ERRORS, Unavailable) as exc:
                if not isinstance(exc, Unavailable):
                    self._failed(exc)
            finally:
                self._break_feeds()
                pubsub, self._pubsub = self._pubsub, None
                if pubsub is not None:
                    try:
                        await asyncio.wait_for(pubsub.aclose(), self.timeout)
                    except (*ERRORS, Exception):
                        pass
            await asyncio.sleep(0.05)

    async def _listen(self) -> None:
        if self._sub_redis is None:
            return  # not shared: nothing to listen to
        pubsub = self._sub_redis.pubsub()
        self._pubsub = pubsub
        async with asyncio.timeout(self.timeout * 4):
            await pubsub.subscribe(*self._handlers)
        while True:
            if self.degraded:
                raise Unavailable(self.degraded)
            message = await pubsub.get_message(timeout=LISTEN_SECONDS)
            if message is None:
                continue
            kind, channel = message["type"], message["channel"].decode()
            if kind == "subscribe":
                for feed in self._feeds.get(channel, ()):
                    feed.ready.set()
            elif kind == "message":
                self._dispatch(channel, message["data"])

    def _dispatch(self, channel: str, data: bytes) -> None:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("ignored a message that is not JSON on %s", channel)
            return
        handler = self._handlers.get(channel)
        if handler is not None:
            try:
                handler(value)
            except Exception:  # one bad message must not stop the listener
                log.exception("handling a message on %s failed", channel)
        for feed in self._feeds.get(channel, ()):
            feed.put(value)

    def _break_feeds(self) -> None:
        for listeners in self._feeds.values():
            for feed in listeners:
                feed.put(Feed.BROKEN)
        self._feeds.clear()

    def _failed(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} (no answer within {self.timeout:g} s)"
        if self.degraded is None:
            log.warning("Redis does not answer (%s): circuits, warm-ups, the rollback guard and live replies "
                        "use this instance's own state for %g s", reason, self.retry_seconds)
        self._down_until = time.monotonic() + self.retry_seconds
        self._down_reason = reason
        if self.metrics is not None:
            self.metrics.redis_error()
            self.metrics.cluster_fallback.set(1)

    def _answered(self) -> None:
        if self._down_reason is not None and not self.degraded:
            log.warning("Redis answers again: shared state is back")
            self._down_reason = None
            if self.metrics is not None:
                self.metrics.cluster_fallback.set(0)
