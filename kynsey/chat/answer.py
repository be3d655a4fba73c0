"""One answer from the tiers: fallback before the first token, the text, the final figures (SPEC F5, F6).

Every way of chatting consumes this one core: a conversation's reply task
(``chat/reply.py``: LiveReply, saving, SSE) and the compatible APIs
(``kynsey/compat``: OpenAI and Ollama streams). It holds every rule that does
not depend on who listens: the fallback chain, circuits, model leases, the
reply and fallback metrics, and the rollback guard's time-to-first-token sample.

    answer = Answer(rt, backends, chain, history, started)
    await answer.open()               # the first tier that yields a first chunk; else its BackendError
    try:
        async for text in answer.texts():   # never raises BackendError: a cut stream sets answer.error
            ...
    finally:
        await answer.aclose()         # the lease and the stream, whatever happened
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from kynsey.backends.base import Backend, ChatChunk, ChatMessage
from kynsey.catalog import Catalog, TierProfile
from kynsey.errors import BackendError, CircuitOpen, PromptTooLong, StreamBroken
from kynsey.runtime import Runtime
from kynsey.storage.text import storable

OptionsFor = Callable[[TierProfile], dict[str, Any]]


def fallback_chain(catalog: Catalog, plan: str, tier: TierProfile) -> list[TierProfile]:
    """The tier, then its fallbacks (and theirs), breadth first, that ``plan`` may use."""
    chain, queue, seen = [], [tier.tier], set()
    while queue:
        slug = queue.pop(0)
        if slug in seen:
            continue
        seen.add(slug)
        candidate = catalog.tiers[slug]
        if candidate is tier or catalog.plan_allows(plan, candidate):
            chain.append(candidate)
        queue.extend(candidate.fallback)
    return chain


def record_failure(rt: Runtime, tier: TierProfile, model: str, exc: BackendError) -> None:
    rt.metrics.backend_error(tier.backend, model, exc.code)
    if isinstance(exc, PromptTooLong):  # the request's fault: the model's circuit stays as it is
        return
    rt.circuits.failure(tier.backend, model)
    rt.metrics.circuit(tier.backend, model, rt.circuits.state(tier.backend, model))


class Answer:
    """A reply being produced: who answers (and why not the tier asked), its text, its figures.

    After ``open``: ``tier`` and ``model`` answer; ``failure`` is why the tiers before it did
    not. After ``texts`` ends: ``final`` (the backend's last chunk) when complete, else
    ``error`` (why it was cut off). ``ttft_ms``, ``chunks`` and ``figures()`` hold at any time.
    """

    __slots__ = (
        "_first",
        "_leased",
        "_stream",
        "asked",
        "backends",
        "chain",
        "chunks",
        "error",
        "failure",
        "final",
        "first_at",
        "history",
        "model",
        "options_for",
        "rt",
        "started",
        "summary",
        "tier",
        "ttft_ms",
    )

    def __init__(self, rt: Runtime, backends: dict[str, Backend], chain: list[TierProfile],
                 history: list[ChatMessage], started: float, options_for: OptionsFor | None = None) -> None:
        self.rt, self.backends, self.chain, self.history, self.started = rt, backends, chain, history, started
        self.options_for = options_for  # a request's own options per tier; None: each tier's catalog options
        self.asked = chain[0]
        self.tier = self.asked  # the tier answering: the one asked until open() finds it cannot
        self.model = backends[self.asked.backend].canonical(self.asked.model_id)
        self.failure: BackendError | None = None
        self.ttft_ms: float | None = None
        self.first_at: float | None = None
        self.chunks = 0
        self.final: ChatChunk | None = None
        self.error: BackendError | None = None
        self.summary: dict[str, Any] | None = None  # figures() as they were when the answer completed
        self._stream: AsyncGenerator[ChatChunk, None] | None = None
        self._first: ChatChunk | None = None
        self._leased = False

    @property
    def fell_back(self) -> bool:
        return self.tier is not self.asked

    @property
    def fallback_reason(self) -> str | None:
        if not self.fell_back:
            return None
        return self.failure.message if self.failure else "unavailable"

    async def open(self) -> None:
        """Try each tier until one yields its first chunk; raise the last error if none does.

        A tier's model is leased from the moment it is asked, so nothing unloads it under the request.
        """
        rt = self.rt
        failure: BackendError | None = None
        for tier in self.chain:
            backend = self.backends[tier.backend]
            model = backend.canonical(tier.model_id)
            if not rt.circuits.allow(tier.backend, model):
                failure = CircuitOpen(f"{tier.display_name} ({model}) is paused after repeated failures", model=model)
                continue
            rt.leases.acquire(tier.backend, model)
            options = self.options_for(tier) if self.options_for is not None else tier.options
            stream = backend.chat(tier.model_id, self.history, options=options, keep_alive=tier.keep_alive)
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                first = ChatChunk(done=True, tokens=0)
            except BackendError as exc:
                rt.leases.release(tier.backend, model)
                await stream.aclose()
                record_failure(rt, tier, model, exc)
                failure = exc
                continue
            except BaseException:
                rt.leases.release(tier.backend, model)
                await stream.aclose()
                raise
            rt.circuits.success(tier.backend, model)
            self.tier, self.model, self.failure = tier, model, failure
            self._stream, self._first, self._leased = stream, first, True
            if tier is not self.asked:
                rt.metrics.fallback(self.asked.tier, tier.tier, failure.code if failure else "unavailable")
            return
        rt.metrics.reply(self.asked.tier, self.asked.model_id, "failed", None, None)
        raise failure or BackendError("no tier could answer")

    async def texts(self) -> AsyncIterator[str]:
        """The text as it arrives, one piece per backend read. Ends quietly when the stream
        completes (``final``) or breaks (``error``); closes the stream either way."""
        rt, tier, model, stream, chunk = self.rt, self.tier, self.model, self._stream, self._first
        if stream is None or chunk is None:
            raise RuntimeError("Answer.texts() before a successful open()")
        try:
            while True:
                if chunk.text:
                    if self.ttft_ms is None:
                        self.first_at = time.perf_counter()
                        self.ttft_ms = (self.first_at - self.started) * 1000
                    self.chunks += chunk.count
                    yield storable(chunk.text)  # a NUL from a model would stop every save on PostgreSQL
                if chunk.done:
                    break
                chunk = await anext(stream)
        except (BackendError, StopAsyncIteration) as exc:
            self.error = exc if isinstance(exc, BackendError) else StreamBroken("the reply ended before the model finished")
            record_failure(rt, tier, model, self.error)
            rt.metrics.reply(tier.tier, model, "interrupted", _seconds(self.ttft_ms), None)
            return
        finally:
            await self.aclose()
        self.final = chunk
        self.summary = figures = self.figures()
        rt.metrics.reply(tier.tier, model, "complete", _seconds(self.ttft_ms), figures["tokens_per_s"])
        if self.ttft_ms is not None:
            rt.guard.record_reply(self.ttft_ms)

    def figures(self) -> dict[str, Any]:
        """ttft_ms, tokens, tokens_per_s and load_ms so far (final once complete)."""
        if self.summary is not None:
            return self.summary
        final = self.final
        tokens = final.tokens if final and final.tokens is not None else self.chunks
        elapsed = time.perf_counter() - self.first_at if self.first_at else 0.0
        return {
            "ttft_ms": _r(self.ttft_ms),
            "tokens": tokens,
            "tokens_per_s": round(tokens / elapsed, 2) if elapsed > 0 and tokens else None,
            "load_ms": _r(final.load_ms) if final else None,
        }

    async def aclose(self) -> None:
        """Release the model's lease and close the backend stream (once; later calls do nothing)."""
        if not self._leased:
            return
        self._leased = False
        if self._stream is not None:  # always, when leased
            self.rt.leases.release(self.tier.backend, self.model)
            await self._stream.aclose()


def _seconds(ms: float | None) -> float | None:
    return ms / 1000 if ms is not None else None


def _r(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
