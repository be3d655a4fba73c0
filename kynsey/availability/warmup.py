"""Warm models before they are needed (SPEC N1).

A switch to a cold tier preloads its model with the tier's keep_alive and the
same options chat uses (a different num_ctx would make Ollama reload). Loads
are single-flight per backend and model. Tiers marked ``keep_warm`` are loaded
at start and re-warmed whenever a status refresh finds them evicted, spread
over a backend's hosts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kynsey.availability.circuit import Circuits
from kynsey.availability.monitor import StatusMonitor
from kynsey.backends.base import Backend
from kynsey.catalog import Catalog, TierProfile
from kynsey.errors import BackendError

log = logging.getLogger(__name__)


class Warmer:
    def __init__(
        self,
        backends: dict[str, Backend],
        monitor: StatusMonitor,
        circuits: Circuits,
    ) -> None:
        self.backends = backends
        self.monitor = monitor
        self.circuits = circuits
        self._tasks: dict[tuple[str, str], asyncio.Task[float]] = {}
        self.listeners: list[Callable[[TierProfile, float | None, BaseException | None], None]] = []

    def is_warming(self, tier: TierProfile) -> bool:
        backend = self.backends[tier.backend]
        return (tier.backend, backend.canonical(tier.model_id)) in self._tasks

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
            task.add_done_callback(lambda t, key=key: self._done(key, tier, t))
        return task

    async def _load(self, tier: TierProfile, backend: Backend) -> float:
        load_ms = await backend.load(tier.model_id, keep_alive=tier.keep_alive, options=tier.options)
        await self.monitor.refresh(tier.backend)
        return load_ms

    def _done(self, key: tuple[str, str], tier: TierProfile, task: asyncio.Task[float]) -> None:
        self._tasks.pop(key, None)
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
