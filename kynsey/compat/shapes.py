"""Which error shape a path answers in: OpenAI's under /v1, Ollama's on its endpoints, else Kynsey's.

``kynsey/web/errors.py`` (the one place errors are rendered) asks here, so an
error reaches an OpenAI or Ollama client in the shape its SDK reads, whatever
raised it: a domain error, a bad body, an unknown route, a database outage.
"""

from __future__ import annotations

from typing import Any

from kynsey.compat import ollama, openai

OPENAI_PREFIX = "/v1"
OLLAMA_MOUNT = "/ollama"
# Ollama's endpoints, also served at the root (a drop-in base URL): none of Kynsey's own routes uses these paths.
OLLAMA_PATHS = ("/api/version", "/api/tags", "/api/ps", "/api/show", "/api/chat", "/api/generate")
_ROOT_PATHS = frozenset(OLLAMA_PATHS)


def render(path: str, status: int, code: str, message: str, headers: dict[str, str] | None,
           details: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str] | None] | None:
    """(status, body, headers) in the shape of the API ``path`` belongs to; None for Kynsey's own."""
    if path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/"):
        status, body = openai.error_body(status, code, message, details)
        if headers and "RateLimit-Limit" in headers:  # a 429: OpenAI's spelling as well
            headers = {**headers, "x-ratelimit-limit-requests": headers["RateLimit-Limit"],
                       "x-ratelimit-remaining-requests": headers["RateLimit-Remaining"],
                       "x-ratelimit-reset-requests": headers["RateLimit-Reset"] + "s"}
        return status, body, headers
    if path in _ROOT_PATHS or path == OLLAMA_MOUNT or path.startswith(OLLAMA_MOUNT + "/"):
        status, body = ollama.error_body(status, code, message, details)
        return status, body, headers
    return None
