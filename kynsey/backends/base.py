"""What every backend kind (ollama, openai, local) offers the rest of Kynsey.

A backend owns its connections (one shared client per host, opened once),
translates its server's failures into ``kynsey.errors.BackendError``
subclasses at the boundary, and bounds every call with a timeout.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelState:
    """One model as one host sees it."""

    name: str
    installed: bool
    loaded: bool
    size: int | None = None
    size_vram: int | None = None
    expires_at: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    url: str
    reachable: bool
    version: str | None = None
    latency_ms: float | None = None
    error: str | None = None
    models: dict[str, ModelState] = field(default_factory=dict)
    timed_out: bool = False  # the probe got no answer in time (as opposed to a refusal or an error)


@dataclass(frozen=True, slots=True)
class BackendSnapshot:
    """A backend's health and models, merged over its hosts."""

    name: str
    kind: str
    hosts: tuple[HostSnapshot, ...]
    checked_at: float = field(default_factory=time.monotonic)

    @property
    def reachable(self) -> bool:
        return any(h.reachable for h in self.hosts)

    def model(self, name: str) -> ModelState | None:
        """The best view of ``name`` over reachable hosts: loaded beats installed."""
        best = None
        for host in self.hosts:
            state = host.models.get(name) if host.reachable else None
            if state and (best is None or (state.loaded and not best.loaded)):
                best = state
        return best

    def host_for(self, name: str) -> str | None:
        """The reachable host to send ``name`` to: where it is loaded, else installed."""
        ranked = [
            (not h.models[name].loaded, i, h.url)
            for i, h in enumerate(self.hosts)
            if h.reachable and name in h.models
        ]
        return min(ranked)[2] if ranked else None


@dataclass(frozen=True, slots=True)
class HostLoad:
    """What a backend knows of one host beyond its probe: streams in flight, its breaker, its capacity."""

    streaming: int = 0
    breaker: str = "closed"  # closed | open | half_open
    capacity: int | None = None  # models it holds at once; None: not known


@dataclass(slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(slots=True)
class ChatChunk:
    """One piece of a streamed reply; the last one has ``done`` and the figures."""

    text: str = ""
    done: bool = False
    count: int = 1  # the stream chunks (about tokens) merged into this one
    tokens: int | None = None
    prompt_tokens: int | None = None
    load_ms: float | None = None
    done_reason: str | None = None


class Backend(ABC):
    """A model server (or in-process runtime) that serves one or more tiers."""

    kind: str = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.snapshot: BackendSnapshot = BackendSnapshot(name, self.kind, ())

    def canonical(self, model_id: str) -> str:
        """The name the server reports for ``model_id`` (Ollama adds ':latest')."""
        return model_id

    def host_load(self, url: str) -> HostLoad:
        """Streams, breaker and capacity of one of ``snapshot.hosts``."""
        return HostLoad()

    def room_for(self, model: str, keep: Collection[str]) -> bool:
        """Could ``model`` load without evicting one of ``keep``? (keep_warm asks before each load.)"""
        return True

    @abstractmethod
    async def probe(self, timeout: float) -> BackendSnapshot:
        """Ask every host for its version and models; never takes longer than ``timeout``."""

    @abstractmethod
    async def load(self, model_id: str, *, keep_alive: str | int, options: dict[str, Any]) -> float:
        """Load ``model_id`` into memory; return the load time in milliseconds."""

    @abstractmethod
    async def unload(self, model_id: str) -> None:
        """Free the memory ``model_id`` holds."""

    @abstractmethod
    def chat(
        self,
        model_id: str,
        messages: Sequence[ChatMessage],
        *,
        options: dict[str, Any],
        keep_alive: str | int,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Stream a reply; failures before or during it raise ``BackendError``."""

    async def aclose(self) -> None:
        """Close connections and free resources."""
