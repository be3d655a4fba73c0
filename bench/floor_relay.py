"""The floor under Kynsey's relay: the least an app on Kynsey's stack adds to a streamed chat.

One FastAPI route, served as Kynsey serves (uvicorn with uvloop and httptools), that validates
the JSON body, sends it to the backend with aiohttp, waits for the first bytes and streams the
rest back: no caller, no limit, no database, no catalog. ``bench/chat_bench.py`` times it
interleaved with the backend direct and with Kynsey, so Kynsey's own share of the time to first
token is the difference between the two added figures.

``bare`` does the same as a bare ASGI app (no FastAPI, no Starlette): the difference between the
two is what the framework itself adds to the first token.

    FLOOR_BACKEND=http://127.0.0.1:11434 python -m uvicorn bench.floor_relay:app --loop uvloop --http httptools
    FLOOR_BACKEND=http://127.0.0.1:11434 python -m uvicorn bench.floor_relay:bare --loop uvloop --http httptools
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

BACKEND = os.environ.get("FLOOR_BACKEND", "http://127.0.0.1:11434")
app = FastAPI()
_session: list[aiohttp.ClientSession] = []


class ChatIn(BaseModel):
    model: str
    messages: list[dict[str, Any]]
    stream: bool = True


async def _post(body: dict[str, Any]) -> aiohttp.ClientResponse:
    if not _session:
        _session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)))
    return await _session[0].post(f"{BACKEND}/api/chat", json=body)


@app.post("/api/chat")
async def relay(body: ChatIn) -> StreamingResponse:
    resp = await _post(body.model_dump())
    first = await resp.content.readany()

    async def lines() -> AsyncIterator[bytes]:
        try:
            yield first
            async for data in resp.content.iter_any():
                yield data
        finally:
            resp.release()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def bare(scope: dict, receive: Any, send: Any) -> None:
    """The same relay as a bare ASGI app: every request is taken for a POST to /api/chat."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    resp = await _post(json.loads(body))
    try:
        first = await resp.content.readany()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson")]})
        await send({"type": "http.response.body", "body": first, "more_body": True})
        async for data in resp.content.iter_any():
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        resp.release()
