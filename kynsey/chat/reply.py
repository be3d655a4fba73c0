"""Generate one reply: fallback before the first token, relay, final save (SPEC F5, F6, N6).

Whatever happens, a reply ends: its listeners get exactly one terminal event
(``done`` or ``error``) at once, and its final state is saved, or kept in
memory and retried until the database takes it (``chat/persist.py``). A
backend failure, a database error, a bug, a user's stop and a shutdown all
end here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from kynsey.backends.base import Backend, ChatChunk, ChatMessage
from kynsey.catalog import Catalog, TierProfile
from kynsey.chat.live import LiveReply
from kynsey.errors import BackendError, CircuitOpen, StreamBroken
from kynsey.runtime import Runtime

log = logging.getLogger(__name__)
STOPPED = "stopped by the user"
SHUTDOWN = "the server stopped while writing this reply; re-send to get a full answer"
DATABASE_DOWN = ("the database does not answer, so this reply stops here rather than show text it cannot keep; "
                 "what it wrote is kept and saved when the database is back")


@dataclass(slots=True)
class Attempt:
    """The tier that answers, its open stream and its first chunk."""

    tier: TierProfile
    model: str
    stream: AsyncIterator[ChatChunk]
    first: ChatChunk
    failure: BackendError | None = None  # why the tiers before it did not answer


@dataclass(slots=True)
class Outcome:
    """How a reply ended: the row's final values and the listeners' terminal event."""

    status: str  # complete | interrupted | failed | stopped
    event: tuple[str, dict[str, Any]]
    values: dict[str, Any] = field(default_factory=dict)


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


async def generate(rt: Runtime, live: LiveReply, backends: dict[str, Backend], chain: list[TierProfile],
                   history: list[ChatMessage], started: float) -> None:
    """The reply task: produce the reply, end every listener's stream, save the final state."""
    progress = _Progress(started)
    try:
        outcome = await _produce(rt, live, backends, chain, history, progress)
    except asyncio.CancelledError:
        outcome = _cancelled(live, progress)
        await asyncio.shield(_conclude(rt, live, progress, outcome))
        raise
    except Exception as exc:  # a bug or a database error: the client must not wait forever
        log.exception("reply %s failed inside Kynsey", live.message_id)
        outcome = _interrupted(progress, "internal", f"Kynsey failed while writing this reply ({type(exc).__name__})")
    await _conclude(rt, live, progress, outcome)


async def _conclude(rt: Runtime, live: LiveReply, progress: "_Progress", outcome: Outcome) -> None:
    """The terminal event goes out at once; then the final state is saved (or kept in memory and
    retried until the database takes it). Readers see the final state from this moment on."""
    values = {"content": live.text, "status": outcome.status, **progress.row, **outcome.values}
    live.finish(outcome.event)
    await rt.replies.save_final(live.message_id, **values)


@dataclass(slots=True)
class _Progress:
    started: float
    tier: TierProfile | None = None
    model: str | None = None
    ttft_ms: float | None = None
    first_at: float | None = None
    chunks: int = 0
    row: dict[str, Any] = field(default_factory=dict)  # the answering tier's columns, when a fallback answers


async def _produce(rt: Runtime, live: LiveReply, backends: dict[str, Backend], chain: list[TierProfile],
                   history: list[ChatMessage], progress: _Progress) -> Outcome:
    asked = chain[0]
    try:
        attempt = await _first_answer(rt, backends, chain, history)
    except BackendError as exc:
        rt.metrics.reply(asked.tier, asked.model_id, "failed", None, None)
        return Outcome("failed", ("error", {"code": exc.code, "message": f"{asked.display_name} could not answer: {exc.message}"}),
                       {"error": exc.message})
    tier, model = attempt.tier, attempt.model
    progress.tier, progress.model = tier, model
    try:
        start = {"message_id": live.message_id, "user_message_id": live.user_message_id, "tier": tier.tier,
                 "model": model, "display_name": tier.display_name}
        if tier is not asked:  # the row names the asked tier until now; say who answers and why
            reason = attempt.failure.message if attempt.failure else "unavailable"
            start |= {"fallback_from": asked.tier, "fallback_reason": reason}
            rt.metrics.fallback(asked.tier, tier.tier, attempt.failure.code if attempt.failure else "unavailable")
            progress.row = {"tier": tier.tier, "model": model, "fallback_from": asked.tier, "fallback_reason": reason}
            try:
                await rt.replies.update(live.message_id, **progress.row)
            except SQLAlchemyError as exc:  # the final save writes it; the stream goes on
                log.warning("could not record the fallback of reply %s yet: %s", live.message_id, exc)
        live.begin(start)
        return await _relay(rt, live, attempt, progress)
    finally:
        rt.leases.release(tier.backend, model)
        await attempt.stream.aclose()


async def _first_answer(rt: Runtime, backends: dict[str, Backend], chain: list[TierProfile],
                        history: list[ChatMessage]) -> Attempt:
    """Try each tier until one yields its first chunk; raise the last error if none does.

    A tier's model is leased from the moment it is asked, so nothing unloads it under the request.
    """
    failure: BackendError | None = None
    for tier in chain:
        backend = backends[tier.backend]
        model = backend.canonical(tier.model_id)
        if not rt.circuits.allow(tier.backend, model):
            failure = CircuitOpen(f"{tier.display_name} ({model}) is paused after repeated failures", model=model)
            continue
        rt.leases.acquire(tier.backend, model)
        stream = backend.chat(tier.model_id, history, options=tier.options, keep_alive=tier.keep_alive)
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
        return Attempt(tier, model, stream, first, failure)
    raise failure or BackendError("no tier could answer")


def record_failure(rt: Runtime, tier: TierProfile, model: str, exc: BackendError) -> None:
    rt.circuits.failure(tier.backend, model)
    rt.metrics.backend_error(tier.backend, model, exc.code)
    rt.metrics.circuit(tier.backend, model, rt.circuits.state(tier.backend, model))


async def _relay(rt: Runtime, live: LiveReply, attempt: Attempt, progress: _Progress) -> Outcome:
    tier, model, stream = attempt.tier, attempt.model, attempt.stream
    chunk, final = attempt.first, None
    try:
        while True:
            if chunk.text:
                if progress.ttft_ms is None:
                    progress.first_at = time.perf_counter()
                    progress.ttft_ms = (progress.first_at - progress.started) * 1000
                live.add(chunk.text)
                rt.live.dirty.add(live.message_id)  # saved by the flusher (chat/persist.py)
                progress.chunks += chunk.count
            if chunk.done:
                final = chunk
                break
            chunk = await anext(stream)
    except (BackendError, StopAsyncIteration) as exc:
        error = exc if isinstance(exc, BackendError) else StreamBroken("the reply ended before the model finished")
        record_failure(rt, tier, model, error)
        rt.metrics.reply(tier.tier, model, "interrupted", _seconds(progress.ttft_ms), None)
        return _interrupted(progress, error.code, f"the reply was cut off: {error.message}", error.message)
    figures = _figures(final, progress)
    rt.metrics.reply(tier.tier, model, "complete", _seconds(progress.ttft_ms), figures["tokens_per_s"])
    if progress.ttft_ms is not None:
        rt.guard.record_reply(progress.ttft_ms)
    return Outcome("complete", ("done", figures), figures)


def _cancelled(live: LiveReply, progress: _Progress) -> Outcome:
    if live.stop_reason == "stopped":
        figures = _figures(None, progress)
        return Outcome("stopped", ("error", {"code": "stopped", "message": STOPPED}), {**figures, "error": STOPPED})
    if live.stop_reason == "database":
        return _interrupted(progress, "database_unavailable", DATABASE_DOWN)
    return _interrupted(progress, "shutdown", SHUTDOWN)


def _interrupted(progress: _Progress, code: str, message: str, error: str | None = None) -> Outcome:
    return Outcome("interrupted", ("error", {"code": code, "message": message}),
                   {"error": error or message, "ttft_ms": _r(progress.ttft_ms)})


def _figures(final: ChatChunk | None, progress: _Progress) -> dict:
    tokens = final.tokens if final and final.tokens is not None else progress.chunks
    elapsed = time.perf_counter() - progress.first_at if progress.first_at else 0.0
    return {
        "ttft_ms": _r(progress.ttft_ms),
        "tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 2) if elapsed > 0 and tokens else None,
        "load_ms": _r(final.load_ms) if final else None,
    }


def _seconds(ms: float | None) -> float | None:
    return ms / 1000 if ms is not None else None


def _r(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
