"""Build the FastAPI application: one runtime, opened and closed in the lifespan."""

from __future__ import annotations

import re
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from kynsey.runtime import Runtime, build_runtime
from kynsey.settings import Settings
from kynsey.logs import request_id_var
from kynsey.web.errors import install_error_handlers
from kynsey.web.middleware import SecurityMiddleware
from kynsey.web.routes import operations
from kynsey.web.routes import admin, auth, conversations, health, tiers
from kynsey.web.routes import catalog_status, upgrades
from kynsey.web.routes import ollama_api, openai_api
from kynsey.compat.shapes import OLLAMA_MOUNT

STATIC = Path(__file__).parent / "static"
SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")  # a caller's id is kept only when it is safe to log and echo


class RequestIdMiddleware:
    """Give every request an id (or keep the caller's X-Request-ID) and echo it back."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = given.decode() if SAFE_REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        scope["request_id"] = rid

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        token = request_id_var.set(rid)  # every log line of this request carries its id
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rt = runtime or build_runtime(settings)
        app.state.runtime = rt
        await rt.start()
        try:
            yield
        finally:
            await rt.aclose()

    app = FastAPI(title="Kynsey", version="0.1.0", lifespan=lifespan)
    app.state.max_body_bytes = settings.max_body_bytes
    install_error_handlers(app)
    for module in (auth, tiers, conversations, health, admin):
        app.include_router(module.router)
    app.include_router(operations.router)
    app.include_router(upgrades.router)
    app.include_router(catalog_status.router)
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)  # at the root (a drop-in base URL) and under /ollama
    app.include_router(ollama_api.router, prefix=OLLAMA_MOUNT)
    app.include_router(ollama_api.mount)
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    app.add_middleware(SecurityMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app
