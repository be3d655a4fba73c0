"""The one ASGI middleware around the whole app: a request id, security headers, an
up-front body limit, and the one place an unexpected error becomes a 500 (so even
that answer carries the headers and the request id). One layer, not one per
concern: every message of every SSE stream passes through it.

The body limit works in two steps: a declared ``Content-Length`` over it is
refused before the app runs; a streamed (chunked) body is counted as it arrives
and refused as soon as it passes the limit, so no handler ever parses it.
(FastAPI's own ``max_body_size`` answers a declared length in plain text, from
outside every handler; hence this one.)
"""

from __future__ import annotations

import logging
import re
import secrets

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from kynsey.logs import request_id_var
from kynsey.web.errors import error_response, too_large_response

log = logging.getLogger(__name__)
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")  # a caller's id is kept only when it is safe to log and echo

# What a page of Kynsey may load and do. Only its own scripts, styles and images
# (data: for the browser's own form controls), no inline script or style, no plugins,
# no framing, and fetches only to itself: model output cannot run, restyle or phone home.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class BodyTooLarge(HTTPException):
    """Raised from ``receive``: FastAPI passes HTTP exceptions through its body parsing untouched."""

    def __init__(self) -> None:
        super().__init__(413, "the request body is too large")


class EdgeMiddleware:
    """Every request gets an id (or keeps the caller's safe ``X-Request-ID``), echoed back and
    stamped on its log lines; every response carries the security headers; an unexpected
    error answers a logged JSON 500.

    Refused before the app runs: a declared ``Content-Length`` over ``max_body_bytes``
    (413 ``payload_too_large``, none of the body read) and a path with a control
    character (404).
    """

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = given.decode() if SAFE_REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        scope["request_id"] = rid
        headers = [*SECURITY_HEADERS, (b"x-request-id", rid.encode())]
        started = False

        async def send_with_headers(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        token = request_id_var.set(rid)  # every log line of this request carries its id
        try:
            await self._handle(scope, receive, send_with_headers, lambda: started)
        finally:
            request_id_var.reset(token)

    async def _handle(self, scope, receive, send_with_headers, started) -> None:
        limit, seen = self.max_body_bytes, 0

        async def receive_limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        if _declared_length(scope) > limit:
            return await too_large_response(limit, scope.get("path", ""))(scope, receive, send_with_headers)
        if CONTROL_CHARS.search(scope.get("path", "")):
            # No name, id or slug has one; PostgreSQL cannot even compare text holding a NUL.
            response = error_response(404, "not_found", "no resource has control characters in its path")
            return await response(scope, receive, send_with_headers)
        try:
            await self.app(scope, receive_limited, send_with_headers)
        except Exception as exc:
            if started():
                raise  # the answer is already under way: the server closes the connection
            if isinstance(exc, BodyTooLarge):  # read outside a FastAPI handler
                return await too_large_response(limit, scope.get("path", ""))(scope, receive, send_with_headers)
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            response = error_response(500, "internal", "an unexpected error occurred; it has been logged",
                                      path=scope.get("path", ""))
            await response(scope, receive, send_with_headers)


def _declared_length(scope) -> int:
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isdigit() else 0
