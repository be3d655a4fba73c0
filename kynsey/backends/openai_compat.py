"""OpenAI-compatible servers (llama.cpp server, vLLM, ...): /v1/models and
/v1/chat/completions streamed as server-sent events (SPEC F2).

Such servers serve exactly the models they list, already in memory, so every
listed model is installed and loaded; load only checks the model is listed
and unload does nothing. Errors arrive as ``{"error": {"message", "type",
"code"}}`` (vLLM also uses a top-level ``message``); an unknown model is a 404
and a full server a 503 or 429. A stream is complete only once a
``finish_reason`` arrived (``data: [DONE]`` alone is not enough: llama.cpp's
server sends it when it cuts a stream short); an error object or an error event, or an event of
the wrong shape, inside the stream breaks it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from kynsey.backends.base import ChatChunk, ChatMessage, HostSnapshot, ModelState
from kynsey.backends.http import (
    MAX_LINE_BYTES,
    Fetched,
    HostClient,
    HttpBackend,
    fetched,
    finish_body,
    host_url,
    line_batches,
    probe_error,
)
from kynsey.errors import BackendBusy, BackendError, ModelMissing, PromptTooLong, StreamBroken

CONTEXT_ERRORS = {"context_length_exceeded", "exceed_context_size_error"}
CONTEXT_WORDS = re.compile(r"maximum context length|context (window|size|length) (is )?exceeded|exceeds? the available context", re.I)
# Kynsey's tier options (Ollama's names) -> the OpenAI request field.
OPTION_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "max_tokens": "max_tokens",
    "num_predict": "max_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


def base_url(host: str) -> str:
    """A server's root URL; a trailing '/v1' (as OpenAI clients are configured) is dropped."""
    url = host.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url[: -len("/v1")] if url.endswith("/v1") else url


def request_options(options: dict[str, Any]) -> dict[str, Any]:
    """Tier options as OpenAI request fields; server-side ones (num_ctx, ...) have no equivalent."""
    fields: dict[str, Any] = {}
    for name, value in options.items():
        field = OPTION_FIELDS.get(name)
        if field is None or value is None:
            continue
        if field == "max_tokens" and (not isinstance(value, int) or value < 0):
            continue  # Ollama's num_predict -1 means "no limit"
        fields[field] = value
    return fields


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error)
        if error:
            return str(error)
        if body.get("message") or body.get("detail"):
            return str(body.get("message") or body.get("detail"))
    return str(body)


def translate_status(resp: Fetched, model: str) -> BackendError:
    """One HTTP failure of an OpenAI-compatible server as Kynsey's backend error."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    text = _error_text(body)[:300] if body is not None else (resp.text.strip()[:300] or resp.reason)
    status = resp.status
    if status == 400 and _too_long(body, text):
        return PromptTooLong(f"the conversation is longer than the model's context ({text})", model=model)
    if status == 404:
        return ModelMissing(f"model '{model}' is not served by the backend ({text})", model=model)
    if status in (429, 503):
        return BackendBusy(f"the backend is busy ({text})", model=model)
    if status in (401, 403):
        return BackendError(f"the backend refused Kynsey's API key ({status}: {text})", model=model)
    return BackendError(f"the backend answered {status}: {text}", model=model)


def _too_long(body: Any, text: str) -> bool:
    """Whether a 400 says the prompt does not fit the context: OpenAI's and llama-cpp-python's code,
    llama.cpp's server's type, or (vLLM) only the words."""
    error = body.get("error") if isinstance(body, dict) else None
    named = isinstance(error, dict) and CONTEXT_ERRORS & {str(error.get("code")), str(error.get("type"))}
    return bool(named) or CONTEXT_WORDS.search(text) is not None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class SSEReader:
    """Server-sent events, fed line by line; yields each event's data once its blank line arrives.
    An error event breaks the stream with its message: ``event: error`` before the data, or an
    ``error:`` field in place of ``data:`` (llama.cpp's server before September 2025). An event's
    data past ``MAX_LINE_BYTES`` breaks it too: a server that never sends the blank line would
    otherwise have every line kept until memory runs out."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._size = 0
        self._error = False

    def feed(self, line: str) -> str | None:
        if not line:
            return self.flush()
        if line.startswith(":"):  # a comment, used as a keep-alive
            return None
        name, _, value = line.partition(":")
        if name == "data" or name == "error":
            self._data.append(value[1:] if value.startswith(" ") else value)
            self._size += len(value)
            if self._size > MAX_LINE_BYTES:
                raise StreamBroken(f"the backend sent an event longer than {MAX_LINE_BYTES // (1 << 20)} MiB")
            if name != "data":
                self._error = True
        elif name == "event":
            self._error = value.strip() == "error"
        return None

    def flush(self) -> str | None:
        if not self._data:
            return None
        data, error, self._data, self._size, self._error = "\n".join(self._data), self._error, [], 0, False
        if error:
            try:
                said = _error_text(orjson.loads(data))
            except orjson.JSONDecodeError:
                said = data
            raise StreamBroken(f"the backend stopped the reply: {said[:300]}")
        return data


@dataclass(slots=True)
class _Reply:
    """What a stream told so far, for its last chunk."""

    chunks: int = 0
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None

    def final(self) -> ChatChunk:
        usage = self.usage or {}
        return ChatChunk(
            done=True,
            tokens=_count(usage.get("completion_tokens")) or self.chunks,
            prompt_tokens=_count(usage.get("prompt_tokens")),
            done_reason=self.finish_reason or "stop",
        )


class OpenAIBackend(HttpBackend):
    kind = "openai"
    probe_while_streaming = False  # llama.cpp's server cuts a running stream when a probe arrives

    def __init__(
        self,
        name: str,
        hosts: Sequence[str],
        *,
        api_key: str | None,
        connect_timeout: float,
        read_timeout: float,
        load_timeout: float,
        **routing: Any,
    ) -> None:
        super().__init__(
            name,
            [base_url(h) for h in hosts],
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            load_timeout=load_timeout,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            **routing,
        )

    # -- status -----------------------------------------------------------------
    async def _probe_host(self, url: str, timeout: float) -> HostSnapshot:
        client = self._clients[url]
        started = time.perf_counter()
        version = asyncio.ensure_future(self._version(client, timeout))
        try:
            async with asyncio.timeout(timeout):
                resp = await client.fetch("GET", "/v1/models", read_timeout=timeout)
            latency = (time.perf_counter() - started) * 1000
            if resp.status >= 400:
                return HostSnapshot(url, False, error=f"answered {resp.status} to {resp.path}")
            models = self._models(resp.json())
            # The version is optional: take it if it arrives within what is left of the timeout.
            await asyncio.wait({version}, timeout=max(timeout - (time.perf_counter() - started), 0))
            found = version.result() if version.done() else None
            return HostSnapshot(url, True, found, round(latency, 2), None, models)
        except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            return HostSnapshot(url, False, error=f"no answer within {timeout:g}s", timed_out=True)
        except (aiohttp.ClientError, ValueError) as exc:
            return HostSnapshot(url, False, error=probe_error(exc))
        finally:
            version.cancel()

    @staticmethod
    async def _version(client: HostClient, timeout: float) -> str | None:
        """vLLM answers GET /version; llama.cpp and others do not, which is fine."""
        try:
            resp = await client.fetch("GET", "/version", read_timeout=timeout)
            body = resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return str(body["version"]) if isinstance(body, dict) and body.get("version") else None

    @staticmethod
    def _models(body: Any) -> dict[str, ModelState]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ValueError("/v1/models did not answer a list of models")
        models: dict[str, ModelState] = {}
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                details = {"owned_by": item["owned_by"]} if item.get("owned_by") else {}
                models[item["id"]] = ModelState(item["id"], installed=True, loaded=True, details=details)
        return models

    # -- load / unload ----------------------------------------------------------
    async def load(self, model_id: str, *, keep_alive: str | int, options: dict[str, Any]) -> float:
        """Nothing to load: check that the server lists the model."""
        client = self._client_for(model_id)
        try:
            resp = await client.fetch("GET", "/v1/models")
        except aiohttp.ClientError as exc:
            raise self.request_error(exc, client, "/v1/models", model_id, loading=False) from exc
        if resp.status >= 400:
            raise translate_status(resp, model_id)
        try:
            listed = self._models(resp.json())
        except ValueError as exc:
            raise BackendError(f"{self.where(client)} answered /v1/models with no list of models", model=model_id,
                               host=host_url(client)) from exc
        if model_id not in listed:
            raise ModelMissing(f"model '{model_id}' is not served by {self.where(client)}", model=model_id,
                               host=host_url(client))
        return 0.0

    async def unload(self, model_id: str) -> None:
        """The server decides what stays in memory."""

    # -- chat ---------------------------------------------------------------------
    async def chat(
        self, model_id: str, messages: Sequence[ChatMessage], *, options: dict[str, Any], keep_alive: str | int
    ) -> AsyncGenerator[ChatChunk, None]:
        client = self._client_for(model_id)
        body = {
            "model": model_id,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            **request_options(options),
        }
        reply, events = _Reply(), SSEReader()
        with self.attempt(client, model_id, loads=False) as attempt:
            try:
                async with self.streaming(client, "POST", "/v1/chat/completions", json=body) as resp:
                    if resp.status >= 400:
                        raise translate_status(await fetched(resp), model_id)
                    batches = line_batches(resp)
                    async for lines in batches:
                        texts, error, done = self._merge(model_id, lines, events, reply)
                        if texts:
                            attempt.served()
                            yield ChatChunk("".join(texts), count=len(texts))
                        if error is not None:
                            raise error
                        if done:
                            await finish_body(batches)  # the connection is reused by the next chat
                            break
                    else:  # a server may close without the blank line after its last event
                        data = events.flush()
                        chunk = self._chunk(model_id, data, reply) if data not in (None, "[DONE]") else None
                        if chunk is not None:
                            yield chunk
            except aiohttp.ClientError as exc:
                raise self.stream_error(exc, client, model_id) from exc
            # Only a finish_reason says the model finished: llama.cpp's server also sends [DONE]
            # when it cuts a stream short because another request arrived.
            if reply.finish_reason is not None:
                attempt.served()
                yield reply.final()
                return
            raise StreamBroken(f"the stream from {self.where(client)} ended before the model finished (no finish_reason)",
                               model=model_id, host=host_url(client))

    @classmethod
    def _merge(cls, model: str, lines: list[bytes], events: SSEReader,
               reply: _Reply) -> tuple[list[str], BackendError | None, bool]:
        """One read's lines: (the texts of its events, the error a bad event raised, whether [DONE] came)."""
        texts: list[str] = []
        for raw in lines:
            try:
                data = events.feed(raw.decode("utf-8", "replace").rstrip("\r"))
                if data is None:
                    continue
                if data == "[DONE]":
                    return texts, None, True
                chunk = cls._chunk(model, data, reply)
            except BackendError as exc:
                return texts, exc, False
            if chunk is not None:
                texts.append(chunk.text)
        return texts, None, False

    @staticmethod
    def _chunk(model: str, data: str, reply: _Reply) -> ChatChunk | None:
        """One event as a chunk (None when it carries no text); an event of the wrong shape breaks the stream."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise StreamBroken(f"the backend sent an event that is not JSON: {data[:80]!r}", model=model) from exc
        if not isinstance(event, dict):
            raise StreamBroken(f"the backend sent an event that is not an object: {data[:80]!r}", model=model)
        if event.get("error") is not None or event.get("object") == "error":
            raise StreamBroken(f"the backend stopped the reply: {_error_text(event)[:300]}", model=model)
        if isinstance(event.get("usage"), dict):
            reply.usage = event["usage"]
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise StreamBroken(f"the backend sent an event of the wrong shape: {data[:80]!r}", model=model)
        text = ""
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            finish = choice.get("finish_reason")
            if not isinstance(delta, dict) or not isinstance(content, str | None) or not isinstance(finish, str | None):
                raise StreamBroken(f"the backend sent an event of the wrong shape: {data[:80]!r}", model=model)
            text += content or ""
            reply.finish_reason = finish or reply.finish_reason
        if not text:
            return None
        reply.chunks += 1
        return ChatChunk(text=text)
