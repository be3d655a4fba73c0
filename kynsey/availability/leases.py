"""Count the streams using each model, so nothing unloads a model under a stream (SPEC F6)."""

from __future__ import annotations

import asyncio
from collections import Counter


class ModelLeases:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._idle: dict[tuple[str, str], asyncio.Event] = {}

    def acquire(self, backend: str, model: str) -> None:
        key = (backend, model)
        self._counts[key] += 1
        event = self._idle.get(key)
        if event is None:
            self._idle[key] = asyncio.Event()  # not set: in use
        else:
            event.clear()

    def release(self, backend: str, model: str) -> None:
        key = (backend, model)
        self._counts[key] -= 1
        if self._counts[key] <= 0:
            del self._counts[key]
            if (event := self._idle.pop(key, None)) is not None:
                event.set()

    def held(self) -> list[tuple[str, str]]:
        """The (backend, model) pairs some stream uses now."""
        return list(self._counts)

    def in_use(self, backend: str, model: str) -> int:
        return self._counts.get((backend, model), 0)

    async def wait_idle(self, backend: str, model: str) -> None:
        event = self._idle.get((backend, model))
        if event is not None:
            await event.wait()
