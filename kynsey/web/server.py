"""Run the app under uvicorn with a bounded, lossless shutdown (SPEC N6).

On SIGTERM or Ctrl+C uvicorn stops accepting connections and waits for open
ones to finish, and an SSE reply can run for minutes. Here the shutdown also
gives running replies ``KYNSEY_SHUTDOWN_GRACE`` seconds to finish; then each
is saved 'interrupted' with its text and its clients get an ``error`` event,
so their connections end and the process exits within the grace period (a
second Ctrl+C still quits at once, leaving replies for the recovery sweep).
"""

from __future__ import annotations

import asyncio
import math

import uvicorn
from fastapi import FastAPI

from kynsey.settings import Settings

# Beyond the grace period, what uvicorn allows for connections to close before it cancels them.
CLOSE_MARGIN = 5.0
# How long an idle connection stays open (uvicorn's default is 5 s). A client that reuses a connection
# the server is closing at that moment gets a reset on its POST, which it may not retry; keeping idle
# connections as long as nginx's default (75 s) makes that rare for clients that pause between turns.
KEEP_ALIVE = 75


class KynseyServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets=None) -> None:
        runtime = getattr(self.app.state, "runtime", None)
        drain = asyncio.create_task(runtime.shutdown_replies()) if runtime is not None else None
        try:
            await super().shutdown(sockets)
        finally:
            if drain is not None:
                await asyncio.gather(drain, return_exceptions=True)


def server_config(settings: Settings, app: FastAPI, **options) -> uvicorn.Config:
    """uvicorn's settings for Kynsey: our logging, no access log, the shutdown bound."""
    return uvicorn.Config(app, log_config=None, access_log=False, timeout_keep_alive=KEEP_ALIVE,
                          timeout_graceful_shutdown=math.ceil(settings.shutdown_grace + CLOSE_MARGIN), **options)
