"""Keep every backend's status fresh in the background (SPEC F3).

Readers never wait on a backend: they read the last snapshot. Only before the
very first probe has finished does a reader wait, and then at most
``status_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from kynsey.backends.base import Backend

log = logging.getLogger(__name__)


class StatusMonitor:
    def __init__(self, backends: dict[str, Backend], *, interval: float, timeout: float) -> None:
        self.backends = backends
        self.interval = interval
        self.timeout = timeout
        self._first = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._listeners: list[Callable[[], Awaitable[None]]] = []

    def on_refresh(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Call ``listener`` after every full refresh (the warm pool uses this)."""
        self._listeners.append(listener)

    async def refresh(self, name: str | None = None) -> None:
        targets = [self.backends[name]] if name else list(self.backends.values())
        await asyncio.gather(*(b.probe(self.timeout) for b in targets))
        if name is None:
            self._first.set()

    async def wait_first(self) -> None:
        """Let the first probe finish, waiting no longer than the status timeout."""
        if not self._first.is_set():
            try:
                await asyncio.wait_for(self._first.wait(), self.timeout + 0.2)
            except TimeoutError:
                pass

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="kynsey-status-monitor")

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
                for listener in self._listeners:
                    await listener()
            except Exception:  # the loop must outlive any single bad probe; log it loudly
                log.exception("status refresh failed")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
