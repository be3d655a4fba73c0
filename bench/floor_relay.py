"""The floor under Kynsey's relay: the least an app on Kynsey's stack adds to a streamed chat.

One FastAPI route, served as Kynsey serves (uvicorn with uvloop and httptools), that validates
the JSON body, sends it to the backend with aiohttp, waits for the first bytes and streams the
rest back: no caller, no limit, no database, no catalog. ``bench/chat_bench.py`` times it
interleaved with the backend direct and with Kynsey, so Kynsey's own share of the time to first
token is the difference between the two added figures.

    FLOOR_BACKEND=http://127.0.0.1:11434 python -m uvicorn bench.floor_relay:app --loop uvloop --http httptools
"""

from __future__ import annotations

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


@app.post("/api/chat")
async def relay(body: ChatIn) -> StreamingResponse:
    if not _session:
        _session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)))
    resp = await _session[0].post(f"{BACKEND}/api/chat", json=body.model_dump())
    first = await resp.content.readany()

    async def lines() -> AsyncIterator[bytes]:
        try:
            yield first
            async for data in resp.content.iter_any():
                yield data
        finally:
            resp.release()

    return StreamingResponse(lines(), media_type="application/x-ndjson")
