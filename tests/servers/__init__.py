"""Real HTTP servers on loopback that speak model servers' protocols.

``FakeOllama`` (``tests.servers.fake_ollama``) and ``FakeOpenAI``
(``tests.servers.fake_openai``) are plain ASGI apps served by uvicorn in a
background thread on 127.0.0.1. This module holds what both share:
``LoopbackServer`` (the server thread: start, stop, restart on the same
port), ``FakeModelServer`` (knobs, request log, routing, failure injection,
token streaming), small ASGI helpers and the command-line runner used by
benchmarks.

Stopping is abrupt on purpose, like a backend that dies: the listening socket
closes (new connections are refused) and open connections are aborted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

__all__ = ["FakeModelServer", "FakeOllama", "FakeOpenAI", "LoopbackServer"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

JSON = b"application/json"
# Waits wake up this often to notice a stop or a client that gave up, so a
# "hang" ends promptly.
_POLL = 0.05
# Failure modes that strike after some tokens; the others answer before any.
# "malformed": a line of the wrong shape (``malformed_line``) among the tokens;
# "cut_done" (OpenAI): ``data: [DONE]`` without a finish_reason, as llama.cpp's
# server ends a stream it cuts short; "endless_line": bytes without an end of line, until
# the client leaves; "endless_event" (OpenAI): data lines without the blank line that ends an
# event, until the client leaves.
STREAMED_FAILURES = ("stream_error", "disconnect", "truncate", "malformed", "cut_done", "linger", "endless_line",
                     "endless_event")


class Gone(Exception):
    """The client went away or the server is stopping: nothing left to answer."""


class LoopbackServer:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1.

    ``start()`` binds an OS-chosen port the first time and the same port on
    later starts; ``stop()`` closes the listener and aborts open connections.
    Subclasses implement ``handle(scope, receive, send)``.
    """

    def __init__(self) -> None:
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None  # set by stop(): tear down
        self._closing: asyncio.Event | None = None  # set once connections are gone: handlers give up
        self.clients_gone = 0  # requests whose client left before the answer was complete
        self._startup_error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self):
        if self._thread is not None:
            return self
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        # Restarting on the same port must work while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(sock, ready),), name=f"{type(self).__name__}:{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or self._startup_error is not None:
            self.stop()
            raise RuntimeError(f"{type(self).__name__} did not start on port {self.port}") from self._startup_error
        return self

    def stop(self) -> None:
        thread, loop, exit_ = self._thread, self._loop, self._exit
        if thread is None:
            return
        if loop is not None and exit_ is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(exit_.set)
            except RuntimeError:  # the loop ended on its own meanwhile
                pass
        thread.join(10)
        self._thread = self._loop = self._exit = self._closing = None

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit, self._closing = asyncio.Event(), asyncio.Event()
        self.reset_loop_state()
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            lifespan="off",
            http="h11",
            proxy_headers=False,
            # Like Ollama's Go server, keep idle connections open: uvicorn's default of 5 s
            # races with clients (Kynsey's status refresh) that reuse a connection every 5 s.
            timeout_keep_alive=600,
            log_config=None,
            log_level="warning",
            access_log=False,
        )
        config.load()
        server = uvicorn.Server(config)
        # Server.serve() polls for exit every 0.1 s and waits on shutdown; tests stop
        # servers constantly, so drive startup ourselves and tear down at once.
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except BaseException as exc:
            self._startup_error = exc
            sock.close()
            ready.set()
            return
        ready.set()
        await self._exit.wait()
        await self._teardown(server, sock)

    async def _teardown(self, server: uvicorn.Server, sock: socket.socket) -> None:
        for listener in server.servers:
            listener.close()
        sock.close()
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        # Let the aborts' connection_lost callbacks run before waking the handlers, so that
        # uvicorn sees their connections gone and does not log "returned without a response".
        await asyncio.sleep(0)
        self._closing.set()
        tasks = list(server.server_state.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            await self.handle(scope, receive, send)
        except Gone:
            pass

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    def reset_loop_state(self) -> None:
        """Forget objects bound to the previous event loop (each start() runs a new one)."""

    # -- helpers for handlers ---------------------------------------------------
    async def pause(self, seconds: float, watch: asyncio.Future | None = None) -> None:
        """Sleep, but raise ``Gone`` as soon as the server stops or the client leaves."""
        if seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            if watch is not None and watch.done():
                self.clients_gone += 1
                raise Gone
            if self._closing is None or self._closing.is_set():
                raise Gone
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, _POLL))

    async def hang(self, watch: asyncio.Future | None) -> None:
        """Never answer; return (as ``Gone``) only when stopped or abandoned."""
        while True:
            await self.pause(3600, watch)


class FakeModelServer(LoopbackServer):
    """What both fakes share: knobs tests set, the request log, routing, failures, token streaming.

    Subclasses fill ``routes`` and implement ``error`` and ``failure`` in their protocol's shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self.first_token_delay = 0.0
        self.token_delay = 0.0
        self.status_delay = 0.0
        self.reply: str | None = None
        self.reply_tokens: int | None = None
        self.fail_after_tokens = 2  # tokens sent before a streamed failure strikes
        self.malformed_line: bytes | None = None  # mode "malformed": sent after those tokens (protocol default if None)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.peers: list[tuple[str, int]] = []  # the client address of each recorded request: one per connection
        self.record_requests = True
        self.routes: dict[tuple[str, str], Handler] = {}
        self._fail_ratio: tuple[float, str] | None = None
        self._counted = 0
        self._token_cache: dict[tuple, list[bytes]] = {}

    @property
    def fail_ratio(self) -> tuple[float, str] | None:
        """``(ratio, mode)``: that share of load and chat requests fails, deterministically.

        Request ``i`` (counting from 1 since the last assignment) fails when
        ``floor(i*ratio) > floor((i-1)*ratio)``, so error-rate tests are exact.
        """
        return self._fail_ratio

    @fail_ratio.setter
    def fail_ratio(self, value: tuple[float, str] | None) -> None:
        if value is not None and not 0 <= value[0] <= 1:
            raise ValueError(f"fail_ratio must be between 0 and 1, not {value[0]}")
        self._fail_ratio = None if value is None else (float(value[0]), value[1])
        self._counted = 0

    def error(self, status: int, message: str) -> Any:
        """An error body in the protocol's shape."""
        raise NotImplementedError

    def failure(self, mode: str, model: str) -> tuple[int, Any]:
        """Status and body for an injected failure that strikes before any reply."""
        raise NotImplementedError

    async def refuse(self, scope: Scope, send: Send) -> bool:
        """Answer and return True to turn a request away before its handler runs."""
        return False

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        route = self.routes.get((method, path))
        if route is None:
            known = any(p == path for _, p in self.routes)
            status = 405 if known else 404
            await send_json(send, status, self.error(status, f"{method} {path} is not served here"))
            return
        if await self.refuse(scope, send):
            return
        body: dict[str, Any] = {}
        if method == "POST":
            parsed, problem = parse_json(await read_body(receive))
            if parsed is None:
                await send_json(send, 400, self.error(400, problem or "bad request"))
                return
            body = parsed
        if self.record_requests:
            self.requests.append((path, body))
            self.peers.append(tuple(scope.get("client") or ("", 0)))
        await route(body, receive, send)

    def pick_failure(self, per_model: str | None) -> str | None:
        """The failure mode for one load or chat request (``fail[model]`` first), or None."""
        if self._fail_ratio is None:
            return per_model
        ratio, mode = self._fail_ratio
        self._counted += 1
        hit = math.floor(self._counted * ratio) > math.floor((self._counted - 1) * ratio)
        return per_model or (mode if hit else None)

    def last(self, path: str) -> dict[str, Any]:
        """The body of the last request recorded to ``path``: a backend re-reads a host (its status
        paths) in the background after a chat, so the last request of all may be one of those."""
        return next(body for seen, body in reversed(self.requests) if seen == path)

    async def answer_failure(self, mode: str | None, model: str, watch: asyncio.Future, send: Send) -> bool:
        """Answer a failure that strikes before any reply; True when answered."""
        if mode is None or mode in STREAMED_FAILURES:
            return False
        if mode == "hang":
            await self.hang(watch)
        status, body = self.failure(mode, model)
        await send_json(send, status, body)
        return True

    def reply_lines(self, key: tuple, last_user: str, encode: Callable[[list[str]], list[bytes]]) -> list[bytes]:
        """The reply as pre-encoded protocol lines: ``reply_tokens`` tokens, ``reply``, or an echo."""
        if self.reply_tokens is not None:
            key = (*key, self.reply_tokens)
            lines = self._token_cache.get(key)
            if lines is None:  # benchmarks: encode once, then only copy bytes
                lines = self._token_cache[key] = encode([f" w{i}" for i in range(self.reply_tokens)])
            return lines
        text = self.reply if self.reply is not None else f"Echo: {last_user}"
        return encode(split_tokens(text))

    async def send_lines(self, send: Send, lines: list[bytes], watch: asyncio.Future) -> None:
        """Stream lines: the first at once, then one per ``token_delay`` or, without delay, in batches."""
        if lines:
            await stream_chunk(send, lines[0])
        if self.token_delay > 0:
            for line in lines[1:]:
                await self.pause(self.token_delay, watch)
                await stream_chunk(send, line)
            return
        for chunk in batches(lines[1:]):
            if watch.done():
                self.clients_gone += 1
                raise Gone
            await stream_chunk(send, chunk)

    async def generate_time(self, count: int, watch: asyncio.Future) -> None:
        """Take as long as streaming ``count`` tokens would (for non-streamed answers)."""
        await self.pause(self.first_token_delay + self.token_delay * max(count - 1, 0), watch)


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Gone
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def parse_json(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The request body as a JSON object, or why it is not one."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        return None, f"invalid JSON: {exc}"
    if not isinstance(data, dict):
        return None, "the body must be a JSON object"
    return data, None


def watch_disconnect(receive: Receive) -> asyncio.Future:
    """A future that completes when the client disconnects (call after reading the body)."""
    return asyncio.ensure_future(receive())


async def send_bytes(send: Send, status: int, body: bytes, content_type: bytes = JSON, headers=()) -> None:
    length = str(len(body)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", length), *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, obj: Any, headers=()) -> None:
    await send_bytes(send, status, json.dumps(obj).encode(), JSON, headers)


async def start_stream(send: Send, content_type: bytes, headers=()) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type), *headers]})


async def stream_chunk(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def drop_connection(send: Send, watch: asyncio.Future) -> None:
    """Close the TCP connection in the middle of a response, as a crashing server does.

    ASGI has no message for this; uvicorn's send is a bound method of the
    request cycle, whose transport we close. Waiting for the disconnect
    keeps uvicorn from logging an "incomplete response" error.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("cannot drop the connection: the server does not expose its transport")
    transport.close()
    try:
        await asyncio.wait_for(asyncio.shield(watch), 2.0)
    except TimeoutError:
        pass
    raise Gone


def split_tokens(text: str) -> list[str]:
    """Word tokens that join back to ``text`` (each keeps its leading space)."""
    first, *rest = text.split(" ")
    return [t for t in [first, *(" " + word for word in rest)] if t]


def prompt_summary(messages: Any) -> tuple[str, int]:
    """The last user message and the prompt's word count (the fakes' token count)."""
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    words = sum(len(str(m.get("content") or "").split()) for m in messages)
    last_user = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
    return last_user, words


def batches(lines: list[bytes], size: int = 64) -> list[bytes]:
    """Join pre-encoded lines into fewer writes; HTTP chunking carries no meaning."""
    return [b"".join(lines[i : i + size]) for i in range(0, len(lines), size)]


def cli_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--models", default="", help="comma-separated model names")
    parser.add_argument("--loaded", default="", help="comma-separated models already in memory (Ollama)")
    parser.add_argument("--reply-tokens", type=int, default=None, help="stream exactly N short tokens")
    parser.add_argument("--first-token-delay", type=float, default=0.0)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--load-delay", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=None, help="models in memory at once (Ollama; default: no cap)")
    parser.add_argument("--api-key", default=None, help="required bearer token (OpenAI)")
    return parser.parse_args(argv)


def names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


def serve_until_killed(fake: LoopbackServer) -> None:
    """Print the URL on the first stdout line, then serve until SIGTERM or Ctrl-C."""
    fake.start()
    print(fake.url, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    fake.stop()
    sys.exit(0)


def __getattr__(name: str):
    # Lazy so that `python -m tests.servers.fake_ollama` does not import itself twice.
    if name == "FakeOllama":
        from tests.servers.fake_ollama import FakeOllama

        return FakeOllama
    if name == "FakeOpenAI":
        from tests.servers.fake_openai import FakeOpenAI

        return FakeOpenAI
    raise AttributeError(name)
