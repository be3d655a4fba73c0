"""Server-sent events for a reply: start, delta, done, error (SPEC "Public interface")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from sqlalchemy.exc import SQLAlchemyError

from kynsey.chat.live import Event, LiveReply
from kynsey.storage.models import Message


def encode(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def stream_live(live: LiveReply) -> AsyncIterator[bytes]:
    """Relay a live reply; deltas that queued up meanwhile go out as one event."""
    queue = live.subscribe()
    try:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            yield _encode_batch(batch)
            if batch[-1] is None:
                return
    finally:
        live.unsubscribe(queue)


def _encode_batch(batch: list[Event | None]) -> bytes:
    out, pending = [], []
    for item in batch:
        if item is not None and item[0] == "delta":
            pending.append(item[1]["text"])
            continue
        if pending:
            out.append(encode("delta", {"text": "".join(pending)}))
            pending = []
        if item is not None:
            out.append(encode(*item))
    if pending:
        out.append(encode("delta", {"text": "".join(pending)}))
    return b"".join(out)


def _start(message: Message) -> dict:
    start = {"message_id": message.id, "tier": message.tier, "model": message.model}
    if message.fallback_from:
        start |= {"fallback_from": message.fallback_from, "fallback_reason": message.fallback_reason}
    return start


def _final(message: Message) -> bytes:
    if message.status == "complete":
        figures = {k: getattr(message, k) for k in ("ttft_ms", "tokens", "tokens_per_s", "load_ms")}
        return encode("done", figures)
    code = message.status if message.status in ("interrupted", "stopped") else "failed"
    return encode("error", {"code": code, "message": message.error or f"the reply {message.status}"})


async def replay_stored(rt, message: Message) -> AsyncIterator[bytes]:
    """A reply this process is not writing: what is saved, then (while another
    writer still streams it) what it saves next, until it is final. Like every
    stream, it ends with a terminal event: a database outage or this process
    shutting down ends it with an ``error`` event the client can re-attach after."""
    yield encode("start", _start(message))
    sent = 0
    while True:
        if len(message.content) > sent:
            yield encode("delta", {"text": message.content[sent:]})
            sent = len(message.content)
        if message.status != "streaming":
            yield _final(message)
            return
        if rt.live.stopping.is_set():
            yield encode("error", {"code": "shutdown", "message": "this server is shutting down; re-attach to get the rest"})
            return
        await asyncio.sleep(rt.settings.chat_flush_seconds)
        try:
            async with rt.sessions() as db:
                fresh = await db.get(Message, message.id)
        except SQLAlchemyError:
            yield encode("error", {"code": "database_unavailable",
                                   "message": "the database does not answer; re-attach to get the rest"})
            return
        if fresh is None:
            yield encode("error", {"code": "deleted", "message": "the conversation was deleted"})
            return
        message = fresh
