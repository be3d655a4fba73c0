"""A backend this installation cannot run, standing in for it so start-up never fails on it.

The built-in catalog has a ``local`` tier (SmolLM2 run by llama.cpp) that every
Ollama tier falls back to. A ``pip install .`` without the ``local`` extra has
no llama.cpp: that backend then shows as unreachable, with the reason and the
fix as its host's error, and every call fails as ``BackendUnreachable``, which
the chat's fallback and the status page already handle.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any

from kynsey.backends.base import Backend, BackendSnapshot, ChatChunk, ChatMessage, HostSnapshot
from kynsey.errors import BackendUnreachable


class UnavailableBackend(Backend):
    def __init__(self, name: str, kind: str, reason: str) -> None:
        self.kind = kind
        super().__init__(name)
        self.reason = reason
        self.snapshot = self._snapshot()

    def _snapshot(self) -> BackendSnapshot:
        return BackendSnapshot(
            self.name, self.kind, (HostSnapshot(f"{self.kind}://{self.name}", False, error=self.reason),)
        )

    def _refuse(self) -> BackendUnreachable:
        return BackendUnreachable(f"backend '{self.name}' is not available: {self.reason}")

    async def probe(self, timeout: float) -> BackendSnapshot:
        self.snapshot = self._snapshot()
        return self.snapshot

    async def load(self, model_id: str, *, keep_alive: str | int, options: dict[str, Any]) -> float:
        raise self._refuse()

    async def unload(self, model_id: str) -> None:
        return None  # nothing is loaded

    async def chat(
        self, model_id: str, messages: Sequence[ChatMessage], *, options: dict[str, Any], keep_alive: str | int
    ) -> AsyncGenerator[ChatChunk, None]:
        raise self._refuse()
        yield ChatChunk()  # pragma: no cover - makes this an async generator like the others
