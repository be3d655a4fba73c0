"""A conversation's reply: the answer (``chat/answer.py``: fallback, relay, metrics) sent to its
listeners and saved (SPEC F5, F6, N6).

Whatever happens, a reply ends: its listeners get exactly one terminal event
(``done`` or ``error``) at once, and its final state is saved, or kept in
memory and retried until the database takes it (``chat/persist.py``). A
backend failure, a database error, a bug, a user's stop and a shutdown all
end here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from kynsey.backends.base import Backend, ChatMessage
from kynsey.catalog import TierProfile
from kynsey.chat.answer import Answer, fallback_chain, record_failure
from kynsey.chat.live import LiveReply
from kynsey.chat.persist import REFUSED
from kynsey.errors import BackendError
from kynsey.runtime import Runtime

__all__ = ["Answer", "Outcome", "fallback_chain", "generate", "record_failure", "reply_task"]
log = logging.getLogger(__name__)
STOPPED = "stopped by the user"
SHUTDOWN = "the server stopped while writing this reply; re-send to get a full answer"
DATABASE_DOWN = ("the database does not answer, so this reply stops here rather than show text it cannot keep; "
                 "what it wrote is kept and saved when the database is back")


@dataclass(slots=True)
class Outcome:
    """How a reply ended: the row's final values and the listeners' terminal event."""

    status: str  # complete | interrupted | failed | stopped
    event: tuple[str, dict[str, Any]]
    values: dict[str, Any] = field(default_factory=dict)


async def generate(rt: Runtime, live: LiveReply, backends: dict[str, Backend], chain: list[TierProfile],
                   history: list[ChatMessage], started: float) -> None:
    """The reply task of a conversation's turn: produce the reply, end every listener's stream, save the final state."""
    await reply_task(rt, live, Answer(rt, backends, chain, history, started))


async def reply_task(rt: Runtime, live: LiveReply, answer: Answer) -> None:
    """``generate`` for an answer the caller built (and may read once the reply ended)."""
    try:
        outcome = await _produce(rt, live, answer)
    except asyncio.CancelledError:
        outcome = _cancelled(live, answer)
        await asyncio.shield(_conclude(rt, live, answer, outcome))
        raise
    except Exception as exc:  # a bug or a database error: the client must not wait forever
        log.exception("reply %s failed inside Kynsey", live.message_id)
        outcome = _interrupted(answer, "internal", f"Kynsey failed while writing this reply ({type(exc).__name__})")
    await _conclude(rt, live, answer, outcome)


async def _conclude(rt: Runtime, live: LiveReply, answer: Answer, outcome: Outcome) -> None:
    """The terminal event goes out at once; then the final state is saved (or kept in memory and
    retried until the database takes it). Readers see the final state from this moment on."""
    values = {"content": live.text, "status": outcome.status, **_answering(answer), **outcome.values}
    live.finish(outcome.event)
    await rt.replies.save_final(live.message_id, **values)


def _answering(answer: Answer) -> dict[str, Any]:
    """The answering tier's columns when a fallback answers (the row names the asked tier until then)."""
    if not answer.fell_back:
        return {}
    return {"tier": answer.tier.tier, "model": answer.model, "fallback_from": answer.asked.tier,
            "fallback_reason": answer.fallback_reason}


async def _produce(rt: Runtime, live: LiveReply, answer: Answer) -> Outcome:
    asked = answer.asked
    try:
        await answer.open()
    except BackendError as exc:
        return Outcome("failed", ("error", {"code": exc.code, "message": f"{asked.display_name} could not answer: {exc.message}"}),
                       {"error": exc.message})
    tier = answer.tier
    try:
        start: dict[str, Any] = {"message_id": live.message_id, "user_message_id": live.user_message_id, "tier": tier.tier,
                 "model": answer.model, "display_name": tier.display_name}
        if answer.fell_back:  # say who answers and why
            start |= {"fallback_from": asked.tier, "fallback_reason": answer.fallback_reason}
            try:
                await rt.replies.update(live.message_id, **_answering(answer))
            except SQLAlchemyError as exc:  # the final save writes it; the stream goes on
                log.warning("could not record the fallback of reply %s yet: %s", live.message_id, exc)
        live.begin(start)
        live_replies, mid = rt.live, live.message_id
        async for text in answer.texts():
            live.add(text)
            live_replies.dirty.add(mid)  # saved by the flusher (chat/persist.py), which swaps the set
    finally:
        await answer.aclose()
    if answer.error is not None:
        error = answer.error
        return _interrupted(answer, error.code, f"the reply was cut off: {error.message}", error.message)
    figures = answer.figures()
    return Outcome("complete", ("done", figures), figures)


def _cancelled(live: LiveReply, answer: Answer) -> Outcome:
    if live.stop_reason == "stopped":
        return Outcome("stopped", ("error", {"code": "stopped", "message": STOPPED}), {**answer.figures(), "error": STOPPED})
    if live.stop_reason == "database":
        return _interrupted(answer, "database_unavailable", DATABASE_DOWN)
    if live.stop_reason == "refused":
        return _interrupted(answer, "database_refused", REFUSED)
    return _interrupted(answer, "shutdown", SHUTDOWN)


def _interrupted(answer: Answer, code: str, message: str, error: str | None = None) -> Outcome:
    return Outcome("interrupted", ("error", {"code": code, "message": message}),
                   {"error": error or message, "ttft_ms": answer.figures()["ttft_ms"]})
