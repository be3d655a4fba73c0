"""Warm models before they are needed (SPEC N1).

A switch to a cold tier preloads its model with the tier's keep_alive and the
same options chat uses (a different num_ctx would make Ollama reload). Loads
are single-flight per backend and model, across instances too when they share
Redis (``kynsey/cluster.py``): the instance that claims a model's load does it
(its claim lasts ``CLAIM_SECONDS`` and is renewed while it loads, so a killed
loader's claim passes); the others show the tier 'warming' and wait for that
load's result instead of sending their own. Tiers marked ``keep_warm`` are
loaded at start and re-warmed whenever a status refresh finds them evicted,
spread over a backend's hosts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import orjson

from kynsey.availability.circuit import Circuits
from kynsey.availability.monitor import StatusMonitor
from kynsey.backends.base import Backend
from kynsey.catalog import Catalog, TierProfile
from kynsey.cluster import Cluster, Unavailable, model_field
from kynsey.errors import BackendError

log = logging.getLogger(__name__)
CLAIM_SECONDS = 10.0  # a load claim's life; the loader renews it every third of that
# Claim a model's load: nil when this instance holds the claim now, else the holder's claim.
# KEYS[1] the warming hash; ARGV: field, instance, now, claim seconds, channel.
CLAIM = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local now = tonumber(ARGV[3])
if raw then
  local w = cjson.decode(raw)
  if w.owner ~= ARGV[2] and w.expires > now then return raw end
end
local w = cjson.encode({owner = ARGV[2], expires = now + tonumber(ARGV[4])})
redis.call('HSET', KEYS[1], ARGV[1], w)
if not raw then redis.call('PUBLISH', ARGV[5], cjson.encode({ARGV[1], cjson.decode(w), false})) end
return false
"""
# Give a claim up with the load's result. ARGV: field, instance, channel, result (JSON).
RELEASE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw).owner == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', ARGV[3], cjson.encode({ARGV[1], false, cjson.decode(ARGV[4])}))
return 1
"""


class Warmer:
    def __init__(
        self,
        backends: dict[str, Backend],
        monitor: StatusMonitor,
        circuits: Circuits,
        cluster: Cluster | None = None,
    ) -> None:
        self.backends = backends
        self.monitor = monitor
        self.circuits = circuits
        self.cluster = cluster or Cluster(None)
        self._tasks: dict[tuple[str, str], asyncio.Task[float]] = {}
        self._waited: set[tuple[str, str]] = set()  # loads another instance did for us
        self._elsewhere: dict[str, float] = {}  # field -> wall-clock expiry of another instance's claim
        self._results: dict[str, asyncio.Future] = {}  # field -> the result of a load we wait for
        self.listeners: list[Callable[[TierProfile, float | None, BaseException | None], None]] = []
        self._hash = self.cluster.key("warming")
        self._claim = self.cluster.script(CLAIM)
        self._release = self.cluster.script(RELEASE)
        self.cluster.on("warming", self._message)
        self.cluster.every_poll(self._poll)

    def is_warming(self, tier: TierProfile) -> bool:
        backend = self.backends[tier.backend]
        key = (tier.backend, backend.canonical(tier.model_id))
        if key in self._tasks:
            return True
        expires = self._elsewhere.get(model_field(*key))
        return expires is not None and expires > time.time()

    async def warm(self, tier: TierProfile, wait: float) -> tuple[bool, float | None]:
        """Load ``tier``'s model, waiting at most ``wait`` s: (loaded, load ms).

        Past the bound the load goes on in the background and (False, None) is
        returned; a failed load raises its BackendError.
        """
        task = self.start(tier)
        try:
            load_ms = await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            return False, None
        return True, load_ms

    def start(self, tier: TierProfile) -> asyncio.Task[float]:
        backend = self.backends[tier.backend]
        key = (tier.backend, backend.canonical(tier.model_id))
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(self._load(tier, backend), name=f"warm {key[1]}")
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._done, key, tier))
        return task

    async def _load(self, tier: TierProfile, backend: Backend) -> float:
        key = (tier.backend, backend.canonical(tier.model_id))
        field = model_field(*key)
        while (holder := await self._claimed(field)) is not None:
            result = await self._wait_elsewhere(field, holder) or {"retry": True}
            await self.monitor.refresh(tier.backend)
            state = backend.snapshot.model(key[1])
            if result.get("retry") and not (state and state.loaded):
                continue  # its loader went away: claim the load for this instance
            self._waited.add(key)
            if not result.get("ok", True):
                raise BackendError(result.get("error") or "the model failed to load on another instance")
            return float(result.get("load_ms") or 0.0)
        renew = asyncio.create_task(self._renew(field), name=f"claim {key[1]}") if self.cluster.shared else None
        outcome: dict = {"ok": False, "retry": True}  # cancelled (a shutdown): another instance takes over
        try:
            load_ms = await backend.load(tier.model_id, keep_alive=tier.keep_alive, options=tier.options)
            outcome = {"ok": True, "load_ms": load_ms}
        except BackendError as exc:
            outcome = {"ok": False, "error": exc.message}
            raise
        finally:
            if renew is not None:
                renew.cancel()
                self._give_up(field, outcome)
        await self.monitor.refresh(tier.backend)
        return load_ms

    # -- single-flight across instances ---------------------------------------------

    async def _claimed(self, field: str) -> dict | None:
        """None when this instance may load (it holds the claim, or Redis is off or failing),
        else the claim of the instance that loads it."""
        args = [field, self.cluster.instance, repr(time.time()), CLAIM_SECONDS, self._hash]
        try:
            raw = await self.cluster.call(lambda r: self._claim(keys=[self._hash], args=args, client=r))
        except Unavailable:
            return None
        if not raw:
            return None
        holder = orjson.loads(raw)
        self._elsewhere[field] = float(holder["expires"])
        return holder

    async def _wait_elsewhere(self, field: str, holder: dict) -> dict | None:
        """The result of another instance's load, or None when its claim lapsed (or Redis failed):
        then this instance tries to claim the load itself."""
        future = self._results.get(field)
        if future is None or future.done():
            future = self._results[field] = asyncio.get_running_loop().create_future()
        while not future.done():
            expires = self._elsewhere.get(field)
            if expires is None or expires <= time.time() or self.cluster.degraded:
                return None
            try:
                return await asyncio.wait_for(asyncio.shield(future), min(1.0, max(0.05, expires - time.time())))
            except TimeoutError:
                continue
        return future.result()

    async def _renew(self, field: str) -> None:
        while True:
            await asyncio.sleep(CLAIM_SECONDS / 3)
            try:
                await self._claimed(field)
            except Exception:  # renewing is best effort; the load goes on
                log.exception("renewing the warm-up claim of %s failed", field)

    def _give_up(self, field: str, outcome: dict) -> None:
        args = [field, self.cluster.instance, self._hash, orjson.dumps(outcome)]
        self.cluster.submit(lambda r: self._release(keys=[self._hash], args=args, client=r))

    def _message(self, message) -> None:
        field, claim, result = message
        if claim:
            if claim.get("owner") != self.cluster.instance:
                self._elsewhere[field] = float(claim["expires"])
            return
        self._elsewhere.pop(field, None)
        future = self._results.pop(field, None)
        if future is not None and not future.done():
            future.set_result(result or {"ok": True})

    async def _poll(self, redis) -> None:
        raw = await redis.hgetall(self._hash)
        now, seen = time.time(), {}
        for field, value in raw.items():
            claim = orjson.loads(value)
            if claim.get("owner") != self.cluster.instance and float(claim["expires"]) > now:
                seen[field.decode()] = float(claim["expires"])
        self._elsewhere = seen

    def _done(self, key: tuple[str, str], tier: TierProfile, task: asyncio.Task[float]) -> None:
        self._tasks.pop(key, None)
        if key in self._waited:  # another instance loaded it and counted its circuit and metrics
            self._waited.discard(key)
            return
        error = None if task.cancelled() else task.exception()
        if isinstance(error, BackendError):
            self.circuits.failure(*key)
            log.warning("warm-up of %s failed: %s", key[1], error)
        elif error is None and not task.cancelled():
            self.circuits.success(*key)
        for listener in self.listeners:
            listener(tier, None if error or task.cancelled() else task.result(), error)

    async def keep_warm(self, catalog: Catalog) -> None:
        """Start a load for every keep_warm tier of ``catalog`` that is installed but in no host's memory.

        The backend's routing puts each load on the host with most room (loads in flight count), so a
        backend's hosts together hold every warm tier; a tier that fits only by evicting another warm
        tier waits (loading it would evict that one, which the next refresh would load again: a storm).
        """
        warm: dict[str, set[str]] = {}
        for tier in catalog.tiers.values():
            if tier.keep_warm:
                warm.setdefault(tier.backend, set()).add(self.backends[tier.backend].canonical(tier.model_id))
        for tier in catalog.tiers.values():
            if not tier.keep_warm:
                continue
            backend = self.backends[tier.backend]
            model = backend.canonical(tier.model_id)
            state = backend.snapshot.model(model)
            if (state and not state.loaded and not self.circuits.is_open(tier.backend, model)
                    and backend.room_for(model, warm[tier.backend] - {model})):
                self.start(tier)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def unload_when_idle(rt, tier: TierProfile) -> float:
    """Unload ``tier``'s model once no stream uses it (Ollama would abort a running
    stream). Returns the seconds it waited."""
    backend = rt.backends[tier.backend]
    model = backend.canonical(tier.model_id)
    started = asyncio.get_running_loop().time()
    while rt.leases.in_use(tier.backend, model):
        await rt.leases.wait_idle(tier.backend, model)
    await backend.unload(tier.model_id)  # no await between the check and the call: no stream can slip in
    await rt.monitor.refresh(tier.backend)
    return asyncio.get_running_loop().time() - started
