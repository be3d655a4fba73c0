"""The one place that turns errors into Kynsey's JSON error shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from kynsey.compat.shapes import render as compat_shape
from kynsey.errors import CatalogError, KynseyError
from kynsey.storage.db import OUTAGES, RolledBack, out_of_connections

log = logging.getLogger(__name__)

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "payload_too_large"}
MAX_PROBLEMS = 20  # a body with a million bad fields must not answer a million problems


def error_response(status: int, code: str, message: str, headers: dict | None = None, *, path: str = "",
                   **details) -> JSONResponse:
    """Kynsey's error shape; on the compatible APIs' paths, OpenAI's or Ollama's (``kynsey/compat/shapes.py``)."""
    shaped = compat_shape(path, status, code, message, headers, details) if path else None
    if shaped is not None:
        status, body, headers = shaped
        return JSONResponse(body, status_code=status, headers=headers)
    return JSONResponse({"error": {"code": code, "message": message, **details}}, status_code=status, headers=headers)


def too_large_response(limit: int, path: str = "") -> JSONResponse:
    return error_response(413, "payload_too_large", f"the request body is larger than {limit} bytes", path=path,
                          limit=limit)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KynseyError)
    async def _domain(request: Request, exc: KynseyError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers or None, path=request.url.path,
                              **exc.details)

    @app.exception_handler(CatalogError)
    async def _catalog(request: Request, exc: CatalogError) -> JSONResponse:
        return error_response(422, "invalid_catalog", str(exc), path=request.url.path, file=exc.path, tier=exc.tier,
                              field=exc.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        problems = [
            {"field": ".".join(str(p) for p in err["loc"][1:]) or "body", "problem": err["msg"]}
            for err in errors[:MAX_PROBLEMS]
        ]
        first = problems[0] if problems else {"field": "body", "problem": "invalid"}
        message = f"invalid request: {first['field']}: {first['problem']}"
        more: dict[str, Any] = {"problems_total": len(errors)} if len(errors) > MAX_PROBLEMS else {}
        return error_response(422, "invalid_request", message, path=request.url.path, problems=problems, **more)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:  # a streamed body grew past the limit (kynsey.web.middleware)
            return too_large_response(request.app.state.max_body_bytes, request.url.path)
        code = HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None),
                              path=request.url.path)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # storage/db.py turns every driver's outage (refused, reset, frozen, too many clients) into OUTAGES.
        if isinstance(exc, RolledBack):  # a deadlock or serialization failure: nothing written, and a retry may pass
            log.warning("the database rolled back %s %s to break a conflict: %s", request.method, request.url.path,
                        str(exc).splitlines()[0])
            return error_response(503, "database_busy", "the database broke off this request to resolve a conflict "
                                  "with another one; try again", headers={"Retry-After": "1"}, path=request.url.path)
        if out_of_connections(exc):  # up, but no connection free: this instance's pool, or the server's
            pool = isinstance(exc, PoolTimeout)
            log.warning("%s on %s %s", "database connection pool exhausted" if pool else "the database has too many "
                        "clients", request.method, request.url.path)
            message = ("every database connection of this instance is in use" if pool
                       else "the database has no free connection (too many clients)")
            return error_response(503, "database_busy", f"{message}; try again in a moment",
                                  headers={"Retry-After": "1"}, path=request.url.path)
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0])
        return error_response(503, "database_unavailable", "the database does not answer; try again shortly",
                              headers={"Retry-After": "2"}, path=request.url.path)

    for failure in (*OUTAGES, RolledBack):
        app.add_exception_handler(failure, _database)
