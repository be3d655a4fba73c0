"""Build the FastAPI application: one runtime, opened and closed in the lifespan."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Scope
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from kynsey.compat.shapes import OLLAMA_MOUNT
from kynsey.runtime import Runtime, build_runtime
from kynsey.settings import Settings
from kynsey.web.errors import install_error_handlers
from kynsey.web.middleware import EdgeMiddleware
from kynsey.web.routes import (
    admin,
    auth,
    catalog_status,
    conversations,
    health,
    ollama_api,
    openai_api,
    operations,
    tiers,
    upgrades,
)

STATIC = Path(__file__).parent / "static"
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

    # FastAPI's own /docs and /redoc load their scripts from a CDN, which the CSP forbids: ours below.
    app = FastAPI(title="Kynsey", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.max_body_bytes = settings.max_body_bytes
    install_error_handlers(app)
    # FastAPI tries the routers in this order, route by route in Python (tens of microseconds for
    # each router passed over): the chat routes first, as they sit on every reply's first token.
    # No two routers share a path, so the order changes nothing else.
    app.include_router(conversations.router)
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)  # at the root (a drop-in base URL) and under /ollama
    for module in (auth, tiers, health, admin, operations, upgrades, catalog_status):
        app.include_router(module.router)
    app.include_router(ollama_api.router, prefix=OLLAMA_MOUNT)
    app.include_router(ollama_api.mount)
    _serve_api_docs(app)
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="static")
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes)
    return app


def _serve_api_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, its files from the swagger-ui-bundle-v2 package and its start in api-docs.js
    (no inline script). The document says how to send an API token (Authorize), so "Try it out" can
    write too: the page's session cookie alone would need the CSRF header."""

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = FastAPI.openapi(app)  # FastAPI's own document, kept on the app: the token is added once
        doc.setdefault("components", {})["securitySchemes"] = {
            "token": {"type": "http", "scheme": "bearer", "description": "an API token (`kynsey user token NAME`)"}}
        doc["security"] = [{"token": []}, {}]  # or the page's session, when signed in
        return doc

    async def docs() -> FileResponse:
        return FileResponse(STATIC / "api-docs.html")

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_api_route("/docs", docs, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/docs/ui", _SwaggerFiles(directory=str(swagger_ui_path)), name="api-docs-ui")


class _SwaggerFiles(StaticFiles):
    """Only the files /docs loads (and their source maps): the package's own index.html would start
    Swagger UI on its Petstore example."""

    SERVED = frozenset({"swagger-ui.css", "swagger-ui.css.map", "swagger-ui-bundle.js", "swagger-ui-bundle.js.map",
                        "favicon-32x32.png"})

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in self.SERVED:
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)
