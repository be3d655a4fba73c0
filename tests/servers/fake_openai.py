"""A real HTTP server on loopback that speaks the OpenAI-compatible API of llama.cpp / vLLM.

GET /v1/models lists ``models``; POST /v1/chat/completions answers one JSON
object, or with ``"stream": true`` server-sent events: chunks with
``choices[0].delta``, a last chunk carrying ``finish_reason``, a usage chunk
when ``stream_options.include_usage`` is set, then ``data: [DONE]``. Errors
are ``{"error": {"message", "type", "code"}}``. Knobs and failure modes match
``FakeOllama`` (see ``FAILURES``; "rate_limited" answers 429); ``api_key`` makes the server answer 401 to
requests without that bearer token; ``version`` (when set) is served at
GET /version, as vLLM does.

Command line (benchmarks): ``python -m tests.servers.fake_openai --port 0
--reply-tokens N --models a,b`` prints its URL on the first line.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

from tests.servers import (  # the shared loopback server and ASGI helpers
    STREAMED_FAILURES,
    FakeModelServer,
    Receive,
    Scope,
    Send,
    cli_args,
    drop_connection,
    names,
    prompt_summary,
    send_json,
    serve_until_killed,
    start_stream,
    stream_chunk,
    watch_disconnect,
)

SSE = b"text/event-stream"
DEFAULT_MODELS = ("llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct", "qwen2.5-coder:7b-instruct")
STREAM_ERROR = "the model stopped unexpectedly: decode failed"
# mode -> (status, message, type, code)
FAILURES = {
    "missing": (404, "The model `{model}` does not exist.", "invalid_request_error", "model_not_found"),
    "busy": (503, "Server busy: all slots are taken, please retry.", "server_error", "unavailable"),
    "rate_limited": (429, "Too many requests, please retry later.", "rate_limit_error", "rate_limit_exceeded"),
    "load_fail": (500, "failed to load model `{model}`", "server_error", "load_failed"),
    "error_500": (500, "unexpected server error", "server_error", None),
    # A prompt longer than the context: llama-cpp-python's server (its words), llama.cpp's, and vLLM's
    # (which says so only in words).
    "context_full": (400, "This model's maximum context length is 2048 tokens. However, you requested 2851 tokens "
                     "(2831 in the messages, 20 in the completion).", "invalid_request_error", "context_length_exceeded"),
    "context_size": (400, "the request exceeds the available context size, try increasing it",
                     "exceed_context_size_error", 400),
    "context_words": (400, "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
                      "in the messages, Please reduce the length of the messages.", "BadRequestError", 400),
}


def error_body(message: str, kind: str, code: str | int | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


class FakeOpenAI(FakeModelServer):
    def __init__(self, models: Iterable[str] | None = None, api_key: str | None = None) -> None:
        super().__init__()
        self.models: list[str] = list(DEFAULT_MODELS if models is None else models)
        self.api_key = api_key
        self.version: str | None = None
        self.owned_by = "kynsey-tests"
        self.fail: dict[str, str] = {}
        self._created = int(time.time())
        self._serial = 0
        self.routes = {
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): self._chat,
            ("GET", "/version"): self._version,
            ("GET", "/health"): self._health,
        }

    def error(self, status: int, message: str) -> Any:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return error_body(message, kind, status)

    def failure(self, mode: str, model: str) -> tuple[int, Any]:
        if mode not in FAILURES:
            return 500, error_body(f"fake misconfigured: unknown failure mode {mode!r}", "server_error", None)
        status, message, kind, code = FAILURES[mode]
        return status, error_body(message.format(model=model), kind, code)

    async def refuse(self, scope: Scope, send: Send) -> bool:
        if self.api_key is None or not scope["path"].startswith("/v1/"):
            return False
        wanted = b"bearer " + self.api_key.encode()
        if any(k == b"authorization" and v.lower() == wanted.lower() for k, v in scope["headers"]):
            return False
        await send_json(send, 401, error_body("Invalid API Key", "invalid_request_error", "invalid_api_key"))
        return True

    async def _health(self, body: dict, receive: Receive, send: Send) -> None:
        await send_json(send, 200, {"status": "ok"})

    async def _version(self, body: dict, receive: Receive, send: Send) -> None:
        if self.version is None:
            await send_json(send, 404, self.error(404, "GET /version is not served here"))
            return
        await send_json(send, 200, {"version": self.version})

    async def _models(self, body: dict, receive: Receive, send: Send) -> None:
        await self.pause(self.status_delay)
        data = [{"id": m, "object": "model", "created": self._created, "owned_by": self.owned_by} for m in self.models]
        await send_json(send, 200, {"object": "list", "data": data})

    # -- chat ---------------------------------------------------------------------
    async def _chat(self, body: dict, receive: Receive, send: Send) -> None:
        model, messages = body.get("model"), body.get("messages")
        if not isinstance(model, str) or not isinstance(messages, list) or not messages:
            await send_json(send, 400, self.error(400, "'model' and a non-empty 'messages' are required"))
            return
        mode = self.pick_failure(self.fail.get(model))
        watch = watch_disconnect(receive)
        try:
            if await self.answer_failure(mode, model, watch, send):
                return
            if model not in self.models:
                await send_json(send, *self.failure("missing", model))
                return
            await self._reply(model, body, mode, watch, send)
        finally:
            watch.cancel()

    async def _reply(self, model: str, body: dict, mode: str | None, watch: asyncio.Future, send: Send) -> None:
        self._serial += 1
        # Cached benchmark replies share one id; clients do not check that ids differ between replies.
        ident = "chatcmpl-fake-bench" if self.reply_tokens is not None else f"chatcmpl-fake{self._serial}"
        last_user, prompt_tokens = prompt_summary(body["messages"])
        lines = self.reply_lines((model,), last_user, lambda tokens: self._encode(ident, model, tokens))
        limit, reason = body.get("max_tokens", body.get("max_completion_tokens")), "stop"
        if isinstance(limit, int) and 0 <= limit < len(lines):
            lines, reason = lines[:limit], "length"
        if mode in STREAMED_FAILURES:
            lines = lines[: self.fail_after_tokens]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(lines), "total_tokens": prompt_tokens + len(lines)}
        if body.get("stream") is True:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            await self._stream(ident, model, lines, reason, usage if include_usage else None, mode, watch, send)
        else:
            await self._answer_whole(ident, model, lines, reason, usage, mode, watch, send)

    def _encode(self, ident: str, model: str, tokens: list[str]) -> list[bytes]:
        head = json.dumps({"id": ident, "object": "chat.completion.chunk", "created": self._created, "model": model})
        prefix = b"data: " + head[:-1].encode() + b',"choices":[{"index":0,"delta":{"content":'
        suffix = b'},"finish_reason":null}]}\n\n'
        return [prefix + json.dumps(tok).encode() + suffix for tok in tokens]

    def _event(self, ident: str, model: str, choices: list, **extra: Any) -> bytes:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": self._created, "model": model, "choices": choices}
        return b"data: " + json.dumps({**chunk, **extra}).encode() + b"\n\n"

    async def _stream(self, ident, model, lines, reason, usage, mode, watch, send) -> None:
        await self.pause(self.first_token_delay, watch)
        await start_stream(send, SSE, [(b"cache-control", b"no-cache")])
        # The first chunk announces the role, as OpenAI's API does.
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        await stream_chunk(send, self._event(ident, model, [role]))
        await self.send_lines(send, lines, watch)
        if mode == "stream_error":  # vLLM's way: an error object as data, then [DONE]
            error = error_body(STREAM_ERROR, "server_error", 500)
            await send({"type": "http.response.body", "body": b"data: " + json.dumps(error).encode() + b"\n\ndata: [DONE]\n\n"})
            return
        if mode == "truncate":  # ends cleanly, but without finish_reason or [DONE]
            await send({"type": "http.response.body", "body": b""})
            return
        if mode == "disconnect":
            await drop_connection(send, watch)
        if mode == "cut_done":  # llama.cpp's server, cutting a stream short for another request
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
            return
        if mode == "endless_event":  # data lines without the blank line that ends an event, until the client leaves
            while not watch.done():
                await send({"type": "http.response.body", "body": b"data: " + b"x" * 65536 + b"\n", "more_body": True})
                await asyncio.sleep(0)
            return
        if mode == "malformed":  # a numeric 'content'
            line = self.malformed_line or b'data: {"choices":[{"index":0,"delta":{"content":5},"finish_reason":null}]}\n\n'
            await stream_chunk(send, line)
        tail = self._event(ident, model, [{"index": 0, "delta": {}, "finish_reason": reason}])
        if usage is not None:
            tail += self._event(ident, model, [], usage=usage)
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})

    async def _answer_whole(self, ident, model, lines, reason, usage, mode, watch, send) -> None:
        await self.generate_time(len(lines), watch)
        if mode == "stream_error":
            await send_json(send, 500, error_body(STREAM_ERROR, "server_error", 500))
            return
        if mode == "truncate":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"id":'})
            return
        if mode == "disconnect":
            await drop_connection(send, watch)
        content = "".join(json.loads(line[len(b"data: "):])["choices"][0]["delta"]["content"] for line in lines)
        await send_json(send, 200, {
            "id": ident, "object": "chat.completion", "created": self._created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": reason}],
            "usage": usage,
        })


def main(argv: list[str] | None = None) -> None:
    args = cli_args("A fake OpenAI-compatible server on 127.0.0.1 for benchmarks.", argv)
    fake = FakeOpenAI(names(args.models) or None, api_key=args.api_key)
    fake.reply_tokens = args.reply_tokens
    fake.first_token_delay, fake.token_delay = args.first_token_delay, args.token_delay
    fake.record_requests = False  # a long benchmark must not grow memory
    serve_until_killed(fake)


if __name__ == "__main__":
    main()
