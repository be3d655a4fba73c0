"""A real HTTP server on loopback that speaks Ollama's native API, for tests and benchmarks.

It keeps Ollama's observable behaviour: names without a tag mean ':latest';
durations are nanoseconds; a chat for a model not in memory loads it first;
a different ``num_ctx`` reloads the model; ``keep_alive`` sets when a model
leaves memory ("5m", 300, "-1" = forever, 0 = unload now); a missing model
is a 404 ``{"error": ...}``; errors can also arrive as the last NDJSON line
of a 200 stream. Failures are injected per model (``fail``) or as a steady
share of requests (``fail_ratio``); see ``FAILURES``. ``capacity`` caps the
models in memory at once (OLLAMA_MAX_LOADED_MODELS): loading one more evicts
the least recently used; ``load_count`` counts loads per model (also served
as ``GET /fake/loads`` for benchmarks that run the fake in its own process; ``POST /fake/fail``
sets a model's failure mode there).

Command line (benchmarks): ``python -m tests.servers.fake_ollama --port 0
--reply-tokens N --models a,b --loaded a [--capacity 1 --load-delay 0.2]``
prints its URL on the first line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.servers import (  # the shared loopback server and ASGI helpers
    STREAMED_FAILURES,
    FakeModelServer,
    Receive,
    Send,
    cli_args,
    drop_connection,
    names,
    prompt_summary,
    send_bytes,
    send_json,
    serve_until_killed,
    start_stream,
    watch_disconnect,
)

NDJSON = b"application/x-ndjson"
DEFAULT_MODELS = {
    "llama3.2:3b-instruct-fp16": 6_433_688_314,
    "qwen2.5:14b-instruct": 8_988_124_069,
    "qwen2.5-coder:7b-instruct": 4_683_087_332,
}
DEFAULT_NUM_CTX = 4096  # Ollama's context length when a request sets none
DEFAULT_KEEP_ALIVE = 300.0
FOREVER_DAYS = 106_751  # Go's max time.Duration, which Ollama uses for "forever"
CUT_JSON = b'{"model":'  # what "truncate" leaves of a one-object answer
MODIFIED_AT = "2025-01-01T00:00:00.000000Z"
STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
# Failures answered before any reply: mode -> (status, error). The other modes:
# "stream_error" (tokens, then an error line), "disconnect" (tokens, then the
# connection drops), "truncate" (tokens, then the response ends cleanly without
# its done line; a load or "stream": false gets cut JSON), "hang" (no answer
# until the client leaves or the server stops) and "linger" (the done line, then
# a line of garbage, and the body stays open until the client leaves).
FAILURES = {
    "missing": (404, "model '{model}' not found"),
    "busy": (503, "server busy, please try again.  maximum pending requests exceeded"),
    "load_fail": (500, "llama runner process has terminated: exit status 2"),
    "error_500": (500, "unexpected server error"),
}
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def canonical(name: str) -> str:
    """Ollama's name for a model: a name without a tag means ':latest'."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def parse_keep_alive(value: Any) -> float | None:
    """Seconds a model stays in memory; None means forever. Raises ValueError like Ollama's 400."""
    if value is None:
        return DEFAULT_KEEP_ALIVE
    if isinstance(value, bool):
        raise ValueError(f"invalid keep_alive {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration(value.strip())
    else:
        raise ValueError(f"invalid keep_alive {value!r}")
    return None if seconds < 0 else seconds


def _parse_duration(text: str) -> float:
    try:
        return float(text)  # Ollama also accepts a bare number of seconds
    except ValueError:
        pass
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
    parts = _GO_DURATION.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * sum(float(n) * _UNIT_NS[u] for n, u in parts) / 1e9


def model_details(name: str) -> dict[str, Any]:
    base, _, tag = name.rpartition(":")
    letters = re.match(r"[a-z]+", base.rsplit("/", 1)[-1].lower())
    family = letters.group() if letters else "unknown"
    size = re.search(r"(\d+(?:\.\d+)?)b(?![a-z])", tag.lower())
    quant = re.search(r"(fp16|f16|q\d_[a-z0-9_]+|q\d)", tag.lower())
    level = quant.group(1).upper().replace("FP16", "F16") if quant else "Q4_K_M"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": f"{size.group(1)}B" if size else "7B",
        "quantization_level": level,
    }


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Names(dict):
    """A dict keyed by canonical model names, so 'llama3' and 'llama3:latest' are one key."""

    def __init__(self, items: Iterable = ()) -> None:
        super().__init__()
        for key, value in dict(items).items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(canonical(key), value)

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(canonical(key))

    def __delitem__(self, key: str) -> None:
        super().__delitem__(canonical(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(canonical(key))

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(canonical(key), default)

    def pop(self, key: str, *default: Any) -> Any:
        return super().pop(canonical(key), *default)

    def setdefault(self, key: str, default: Any = None) -> Any:
        return super().setdefault(canonical(key), default)


class Counts(Names):
    def __missing__(self, key: str) -> int:
        return 0


@dataclass(slots=True)
class Residency:
    """A model in memory: the context it was loaded with and when it leaves (epoch s; None = never)."""

    num_ctx: int = DEFAULT_NUM_CTX
    expires_at: float | None = None


class Resident(Names):
    """Models in memory; ``add``/``discard`` let tests use it like a set."""

    def add(self, name: str) -> None:
        self.setdefault(name, Residency())

    def discard(self, name: str) -> None:
        self.pop(name, None)


class FakeOllama(FakeModelServer):
    def __init__(
        self, models: dict[str, int] | None = None, loaded: Iterable[str] = (), version: str = "0.12.6"
    ) -> None:
        super().__init__()
        self.models = Names(DEFAULT_MODELS if models is None else models)
        self._resident = Resident((name, Residency()) for name in loaded)
        self.version = version
        self.load_delay = 0.0
        self.default_num_ctx = DEFAULT_NUM_CTX
        self.fail = Names()
        self.load_count = Counts()
        self.capacity: int | None = None
        self._used = Names()  # model -> when a request last used it, for the least-recently-used eviction
        self._locks: dict[str, asyncio.Lock] = {}
        self.routes = {
            ("GET", "/"): self._root,
            ("GET", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/generate"): self._generate,
            ("POST", "/api/chat"): self._chat,
            ("GET", "/fake/loads"): self._loads,
            ("POST", "/fake/fail"): self._set_fail,
        }

    @property
    def loaded(self) -> Resident:
        """Models in memory now (expired ones dropped), canonical name -> Residency."""
        now = time.time()
        for name, res in list(self._resident.items()):
            if res.expires_at is not None and res.expires_at <= now:
                self._resident.discard(name)
        return self._resident

    def evict(self, model: str) -> None:
        """Drop a model from memory, as Ollama does under memory pressure."""
        self._resident.discard(model)

    def error(self, status: int, message: str) -> Any:
        return {"error": message}

    def failure(self, mode: str, model: str) -> tuple[int, Any]:
        if mode not in FAILURES:
            return 500, {"error": f"fake misconfigured: unknown failure mode {mode!r}"}
        status, message = FAILURES[mode]
        return status, {"error": message.format(model=model)}

    def reset_loop_state(self) -> None:
        self._locks.clear()

    # -- status -------------------------------------------------------------------
    async def _root(self, body: dict, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, b"Ollama is running", b"text/plain; charset=utf-8")

    async def _version(self, body: dict, receive: Receive, send: Send) -> None:
        await self.pause(self.status_delay)
        await send_json(send, 200, {"version": self.version})

    async def _tags(self, body: dict, receive: Receive, send: Send) -> None:
        await self.pause(self.status_delay)
        # list() first: tests change models from their own thread while a probe is served.
        await send_json(send, 200, {"models": [self._describe(name, size) for name, size in list(self.models.items())]})

    async def _ps(self, body: dict, receive: Receive, send: Send) -> None:
        await self.pause(self.status_delay)
        running = []
        for name, res in list(self.loaded.items()):
            entry = self._describe(name, self.models.get(name, 0))
            del entry["modified_at"]
            left = timedelta(days=FOREVER_DAYS) if res.expires_at is None else timedelta(seconds=res.expires_at - time.time())
            expires = (datetime.now().astimezone() + left).isoformat()
            entry.update(expires_at=expires, size_vram=entry["size"], context_length=res.num_ctx)
            running.append(entry)
        await send_json(send, 200, {"models": running})

    @staticmethod
    def _describe(name: str, size: int) -> dict[str, Any]:
        digest = hashlib.sha256(name.encode()).hexdigest()
        return {"name": name, "model": name, "modified_at": MODIFIED_AT, "size": size, "digest": digest,
                "details": model_details(name)}

    async def _loads(self, body: dict, receive: Receive, send: Send) -> None:
        loads = dict(self.load_count)
        await send_json(send, 200, {"loads": loads, "total": sum(loads.values()), "loaded": list(self.loaded)})

    async def _set_fail(self, body: dict, receive: Receive, send: Send) -> None:
        """``{"model": ..., "mode": ...}`` sets how a model fails (``mode`` null: it works again), for
        tests that run the fake in its own process."""
        name = canonical(str(body.get("model") or ""))
        if body.get("mode"):
            self.fail[name] = str(body["mode"])
        else:
            self.fail.pop(name, None)
        await send_json(send, 200, {"fail": dict(self.fail)})

    async def _show(self, body: dict, receive: Receive, send: Send) -> None:
        name = canonical(str(body.get("model") or body.get("name") or ""))
        if name not in self.models:
            await send_json(send, 404, {"error": f"model '{name}' not found"})
            return
        details = model_details(name)
        info = {"general.architecture": details["family"], f"{details['family']}.context_length": 131072}
        await send_json(send, 200, {
            "modelfile": f"FROM {name}\n", "parameters": 'stop "<|eot_id|>"', "template": "{{ .Prompt }}",
            "details": details, "model_info": info, "capabilities": ["completion", "tools"], "modified_at": MODIFIED_AT,
        })

    # -- load, unload, generate, chat ------------------------------------------------
    async def _generate(self, body: dict, receive: Receive, send: Send) -> None:
        await self._model_request(body, receive, send, kind="generate")

    async def _chat(self, body: dict, receive: Receive, send: Send) -> None:
        await self._model_request(body, receive, send, kind="chat")

    async def _model_request(self, body: dict, receive: Receive, send: Send, *, kind: str) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            await send_json(send, 400, {"error": "model is required"})
            return
        try:
            keep_alive = parse_keep_alive(body.get("keep_alive"))
        except ValueError as exc:
            await send_json(send, 400, {"error": str(exc)})
            return
        name = canonical(model)
        prompt = body.get("messages") if kind == "chat" else body.get("prompt")
        if not prompt and keep_alive == 0:
            await self._unload(model, name, kind, send)
            return
        mode = self.pick_failure(self.fail.get(name))
        watch = watch_disconnect(receive)
        try:
            if await self.answer_failure(mode, name, watch, send):
                return
            if name not in self.models:
                await send_json(send, 404, {"error": f"model '{name}' not found"})
            elif not prompt:
                await self._load(model, name, body, keep_alive, kind, mode, watch, send)
            else:
                await self._reply(model, name, body, keep_alive, kind, mode, watch, send)
        finally:
            watch.cancel()

    async def _unload(self, model: str, name: str, kind: str, send: Send) -> None:
        if name not in self.models and name not in self._resident:
            await send_json(send, 404, {"error": f"model '{name}' not found"})
            return
        self._resident.discard(name)
        await send_json(send, 200, self._empty_answer(model, kind, "unload"))

    async def _load(self, model, name, body, keep_alive, kind, mode, watch, send) -> None:
        if mode == "disconnect":
            await drop_connection(send, watch)
        if mode == "stream_error":  # a load has no tokens: the error is its only line
            await send_json(send, 200, {"error": FAILURES["load_fail"][1]})
            return
        if mode == "truncate":
            await send_bytes(send, 200, CUT_JSON)
            return
        await self._ensure_loaded(name, body.get("options"))
        self._keep(name, keep_alive)
        await send_json(send, 200, self._empty_answer(model, kind, "load"))

    @staticmethod
    def _empty_answer(model: str, kind: str, reason: str, content: str = "") -> dict[str, Any]:
        answer: dict[str, Any] = {"model": model, "created_at": _now_iso()}
        if kind == "chat":
            answer["message"] = {"role": "assistant", "content": content}
        else:
            answer["response"] = content
        return {**answer, "done": True, "done_reason": reason}

    async def _ensure_loaded(self, name: str, options: Any) -> int:
        """Load ``name`` unless it is in memory with the same context; the simulated load time in ns."""
        options = options if isinstance(options, dict) else {}
        num_ctx = int(options.get("num_ctx") or self.default_num_ctx)
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._used[name] = time.monotonic()
        async with lock:  # concurrent requests for a cold model share one load, like Ollama's scheduler
            current = self.loaded.get(name)
            if current is not None and current.num_ctx == num_ctx:
                return 0
            self._make_room(name)
            # A load goes on even if its client gives up; only a stop interrupts it.
            await self.pause(self.load_delay)
            self._make_room(name)  # again: another model may have loaded meanwhile
            self.load_count[name] += 1
            self._resident[name] = Residency(num_ctx, time.time() + DEFAULT_KEEP_ALIVE)
            return int(self.load_delay * 1e9)

    def _make_room(self, name: str) -> None:
        """Evict the least recently used models until ``name`` fits under ``capacity``."""
        others = [m for m in self.loaded if m != canonical(name)]
        if self.capacity is None or len(others) < self.capacity:
            return
        others.sort(key=lambda m: self._used.get(m, 0.0))
        for model in others[: len(others) - self.capacity + 1]:
            self._resident.discard(model)

    def _keep(self, name: str, keep_alive: float | None) -> None:
        if keep_alive == 0:
            self._resident.discard(name)
        elif name in self._resident:
            self._resident[name].expires_at = None if keep_alive is None else time.time() + keep_alive

    async def _reply(self, model, name, body, keep_alive, kind, mode, watch, send) -> None:
        started = time.perf_counter_ns()
        load_ns = await self._ensure_loaded(name, body.get("options"))
        last_user, prompt_count = prompt_summary(body["messages"]) if kind == "chat" else (str(body["prompt"]), 0)
        prompt_count = prompt_count or len(last_user.split())
        lines = self.reply_lines((kind, model), last_user, lambda tokens: self._encode(model, kind, tokens))
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        limit, reason = options.get("num_predict"), "stop"
        if isinstance(limit, int) and 0 <= limit < len(lines):
            lines, reason = lines[:limit], "length"
        if mode in STREAMED_FAILURES:
            lines = lines[: self.fail_after_tokens]
        figures = {"started": started, "load_ns": load_ns, "prompt_count": prompt_count, "reason": reason}
        try:
            if body.get("stream", True) is False:
                await self._answer_whole(model, kind, lines, figures, mode, watch, send)
            else:
                await self._stream(model, kind, lines, figures, mode, watch, send)
        finally:
            self._keep(name, keep_alive)

    @staticmethod
    def _encode(model: str, kind: str, tokens: list[str]) -> list[bytes]:
        head = json.dumps({"model": model, "created_at": _now_iso()})[:-1].encode()
        if kind == "chat":
            prefix, suffix = head + b',"message":{"role":"assistant","content":', b'},"done":false}\n'
        else:
            prefix, suffix = head + b',"response":', b',"done":false}\n'
        return [prefix + json.dumps(tok).encode() + suffix for tok in tokens]

    def _final(self, model: str, kind: str, figures: dict, count: int, first_ns: int, content: str = "") -> dict:
        now = time.perf_counter_ns()
        return {
            **self._empty_answer(model, kind, figures["reason"], content),
            "total_duration": now - figures["started"] + figures["load_ns"],
            "load_duration": figures["load_ns"],
            "prompt_eval_count": figures["prompt_count"],
            "prompt_eval_duration": max(first_ns - figures["started"], 1),
            "eval_count": count,
            "eval_duration": max(now - first_ns, 1),
        }

    async def _stream(self, model, kind, lines, figures, mode, watch, send) -> None:
        # Ollama writes its headers with the first token, so delays show up before them.
        await self.pause(self.first_token_delay, watch)
        await start_stream(send, NDJSON)
        first_ns = time.perf_counter_ns()
        await self.send_lines(send, lines, watch)
        if mode == "stream_error":
            await send({"type": "http.response.body", "body": json.dumps({"error": STREAM_ERROR}).encode() + b"\n"})
            return
        if mode == "truncate":
            await send({"type": "http.response.body", "body": b""})
            return
        if mode == "disconnect":
            await drop_connection(send, watch)
        if mode == "endless_line":
            while not watch.done():
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
                await asyncio.sleep(0)
            return
        if mode == "malformed":  # a 'message' that is a string, not an object
            line = self.malformed_line or b'{"model":"m","message":"oops","done":false}\n'
            await send({"type": "http.response.body", "body": line, "more_body": True})
        final = json.dumps(self._final(model, kind, figures, len(lines), first_ns)).encode() + b"\n"
        if mode == "linger":  # the done line, then garbage, and the body never ends while the client stays
            await send({"type": "http.response.body", "body": final + b"not json after the end\n", "more_body": True})
            await self.pause(3600, watch)
            return
        await send({"type": "http.response.body", "body": final})

    async def _answer_whole(self, model, kind, lines, figures, mode, watch, send) -> None:
        await self.generate_time(len(lines), watch)
        if mode == "stream_error":
            await send_json(send, 500, {"error": STREAM_ERROR})
            return
        if mode == "truncate":
            await send_bytes(send, 200, CUT_JSON)
            return
        if mode == "disconnect":
            await drop_connection(send, watch)
        parts = [json.loads(line) for line in lines]
        content = "".join(p["message"]["content"] if kind == "chat" else p["response"] for p in parts)
        await send_json(send, 200, self._final(model, kind, figures, len(lines), time.perf_counter_ns(), content))


def main(argv: list[str] | None = None) -> None:
    args = cli_args("A fake Ollama server on 127.0.0.1 for benchmarks.", argv)
    models = {}
    for item in names(args.models) or list(DEFAULT_MODELS):
        name, _, size = item.partition("=")
        models[name] = int(size) if size else DEFAULT_MODELS.get(canonical(name), 1_000_000_000)
    fake = FakeOllama(models, loaded=names(args.loaded))
    fake.reply_tokens = args.reply_tokens
    fake.first_token_delay, fake.token_delay, fake.load_delay = args.first_token_delay, args.token_delay, args.load_delay
    fake.capacity = args.capacity
    fake.record_requests = False  # a long benchmark must not grow memory
    serve_until_killed(fake)


if __name__ == "__main__":
    main()
