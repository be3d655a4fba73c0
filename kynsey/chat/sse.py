"""Server-sent events for a reply: start, delta, done, error (SPEC "Public interface")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
from sqlalchemy.exc import SQLAlchemyError

from kynsey.chat.live import Event, LiveReply
from kynsey.cluster import Feed
from kynsey.storage.models import Message

FEED_WAKE_SECONDS = 1.0  # a pushed stream still checks for a shutdown this often


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
    writer still streams it) the rest, until it is final. With Redis the writer
    pushes each delta as it is produced (``chat/relay.py``); without it, or when
    Redis fails, the database is read every ``chat_flush_seconds``. Like every
    stream, it ends with a terminal event: a database outage or this process
    shutting down ends it with an ``error`` event the client can re-attach after."""
    yield encode("start", _start(message))
    sent = 0
    feed = await rt.relay.follow(message.id) if message.status == "streaming" else None
    quiet = 0.0  # seconds the writer's feed has been silent
    try:
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
            if feed is not None:
                pushed = await feed.next(FEED_WAKE_SECONDS)
                if pushed is Feed.BROKEN:  # Redis failed: the database from now on
                    await feed.close()
                    feed = None
                elif pushed is not None:
                    quiet = 0.0
                    out, sent, final = _take(pushed, sent)
                    if out:
                        yield out
                    if final is not None:
                        yield encode(*final)
                        return
                    continue
                else:
                    quiet += FEED_WAKE_SECONDS
                    if quiet < rt.settings.stream_stale_seconds / 3:
                        continue  # a slow model: check the row now and then, in case its writer died
                    quiet = 0.0
            else:
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
            if feed is not None and len(fresh.content) > sent:  # the writer's pushes stopped reaching us
                await feed.close()
                feed = None
            message = fresh  # a row that lags what the writer pushed adds nothing: ``sent`` keeps our place
    finally:
        if feed is not None:
            await feed.close()


def _take(pushed: list, sent: int) -> tuple[bytes, int, Event | None]:
    """The text of ``pushed`` beyond the ``sent`` characters already out, as one delta event,
    and its terminal event if it holds one."""
    pieces, final = [], None
    for name, data in pushed:
        if name == "delta":
            at, text = data["at"], data["text"]
            if at <= sent < at + len(text):
                pieces.append(text[sent - at:])
                sent = at + len(text)
        elif name in ("done", "error"):
            final = (name, data)
            break
    return (encode("delta", {"text": "".join(pieces)}) if pieces else b""), sent, final
