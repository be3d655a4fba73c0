"""Ollama's native API: /api/version, /api/tags, /api/ps, /api/chat,
and preload/unload through /api/generate (SPEC F2).

Ollama facts this module relies on: a name without a tag means ':latest';
durations are nanoseconds; a missing model is a 404 ``{"error": "model '...'
not found"}``; a full queue is a 503; a failed load is a 500; and an error can
also arrive as the last NDJSON line of a 200 stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import aiohttp
import msgspec
import orjson
from msgspec import UNSET

from kynsey.backends.base import ChatChunk, ChatMessage, HostSnapshot, ModelState
from kynsey.backends.http import (
    Fetched,
    HostClient,
    HttpBackend,
    fetched,
    finish_body,
    host_url,
    line_batches,
    probe_error,
)
from kynsey.errors import BackendBusy, BackendError, BackendUnreachable, ModelLoadFailed, ModelMissing, StreamBroken

NS_PER_MS = 1_000_000


class _Content(msgspec.Struct):
    content: Any = None


class _TokenLine(msgspec.Struct):
    """What the relay reads of a token's NDJSON line: its other fields are skipped, not built (a
    line per token, at hundreds of streams). ``error`` is UNSET unless the line has one."""

    message: _Content | None = None
    done: Any = None
    error: Any = UNSET


_TOKEN_LINE = msgspec.json.Decoder(_TokenLine)


def ollama_name(model_id: str) -> str:
    """Ollama's canonical name: a name without a tag means ':latest'."""
    last = model_id.rsplit("/", 1)[-1]
    return model_id if ":" in last else f"{model_id}:latest"


def _message(resp: Fetched) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason
    return str(body.get("error") if isinstance(body, dict) and "error" in body else body)[:300]


def _is_load_failure(message: str) -> bool:
    text = message.lower()
    return any(word in text for word in ("load", "runner", "memory"))


def translate_status(resp: Fetched, model: str, *, loading: bool) -> BackendError:
    """One Ollama HTTP failure as Kynsey's backend error."""
    text = _message(resp)
    if resp.status == 404:
        return ModelMissing(f"model '{model}' is not installed on the backend ({text})", model=model)
    if resp.status == 503:
        return BackendBusy(f"the backend is busy ({text})", model=model)
    if resp.status == 500 and (loading or _is_load_failure(text)):
        return ModelLoadFailed(f"model '{model}' failed to load ({text})", model=model)
    return BackendError(f"the backend answered {resp.status}: {text}", model=model)


class OllamaBackend(HttpBackend):
    kind = "ollama"

    def canonical(self, model_id: str) -> str:
        return ollama_name(model_id)

    # -- status -----------------------------------------------------------------
    async def _probe_host(self, url: str, timeout: float) -> HostSnapshot:
        client = self._clients[url]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                version = await client.fetch("GET", "/api/version", read_timeout=timeout)
                latency = (time.perf_counter() - started) * 1000
                tags, ps = await asyncio.gather(client.fetch("GET", "/api/tags", read_timeout=timeout),
                                                client.fetch("GET", "/api/ps", read_timeout=timeout))
            failed = next((resp for resp in (version, tags, ps) if resp.status >= 400), None)
            if failed is not None:
                return HostSnapshot(url, False, error=f"answered {failed.status} to {failed.path}")
            models = self._models(tags.json().get("models") or [], ps.json().get("models") or [])
            return HostSnapshot(url, True, version.json().get("version"), round(latency, 2), None, models)
        except TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
            return HostSnapshot(url, False, error=f"no answer within {timeout:g}s", timed_out=True)
        except (aiohttp.ClientError, ValueError, AttributeError, TypeError) as exc:
            return HostSnapshot(url, False, error=probe_error(exc))

    @staticmethod
    def _models(tags: list[dict], ps: list[dict]) -> dict[str, ModelState]:
        loaded = {ollama_name(m.get("name") or m.get("model", "")): m for m in ps}
        models: dict[str, ModelState] = {}
        for m in tags:
            name = ollama_name(m.get("name") or m.get("model", ""))
            running = loaded.get(name)
            models[name] = ModelState(
                name,
                installed=True,
                loaded=running is not None,
                size=m.get("size"),
                size_vram=running.get("size_vram") if running else None,
                expires_at=running.get("expires_at") if running else None,
                details=m.get("details") or {},
            )
        for name, m in loaded.items():
            models.setdefault(name, ModelState(name, True, True, m.get("size"), m.get("size_vram"), m.get("expires_at"), m.get("details") or {}))
        return models

    # -- load / unload ----------------------------------------------------------
    async def load(self, model_id: str, *, keep_alive: str | int, options: dict[str, Any]) -> float:
        model = self.canonical(model_id)
        body = {"model": model, "keep_alive": keep_alive, "options": options}
        started = time.perf_counter()
        resp = await self._post(model, "/api/generate", body, timeout=self.load_timeout, loading=True)
        try:
            data = resp.json()
        except ValueError as exc:
            raise BackendError(f"the backend's answer to a load of '{model}' is not JSON", model=model) from exc
        if isinstance(data, dict) and data.get("error"):
            raise ModelLoadFailed(f"model '{model}' failed to load ({data['error']})", model=model)
        return (time.perf_counter() - started) * 1000

    async def unload(self, model_id: str) -> None:
        """Unload from every host that holds the model (with holder routing, several may)."""
        model = self.canonical(model_id)
        body = {"model": model, "keep_alive": 0}
        holders = [h.url for h in self.snapshot.hosts if h.reachable and model in h.models and h.models[model].loaded]
        if len(holders) < 2:
            await self._post(model, "/api/generate", body, timeout=None, loading=False)
            return
        for url in holders:
            client = self._clients[url]
            try:
                resp = await client.fetch("POST", "/api/generate", json=body)
            except aiohttp.ClientError as exc:
                raise self.request_error(exc, client, "/api/generate", model, loading=False) from exc
            if resp.status >= 400:
                raise translate_status(resp, model, loading=False)

    async def _post(self, model: str, path: str, body: dict, *, timeout: float | None, loading: bool) -> Fetched:
        for client in self._clients_for(model):
            try:
                with self.attempt(client, model, loads=loading) as attempt:
                    try:  # a load may take longer than a reply's read timeout
                        resp = await client.fetch("POST", path, json=body, read_timeout=timeout or None)
                    except aiohttp.ClientError as exc:
                        raise self.request_error(exc, client, path, model, loading=loading) from exc
                    if resp.status >= 400:
                        raise translate_status(resp, model, loading=loading)
                    if loading:
                        attempt.served()
                    return resp
            except BackendUnreachable as exc:
                error = exc  # nothing reached that host: the next one may answer
        raise error

    # -- chat ---------------------------------------------------------------------
    async def chat(
        self, model_id: str, messages: Sequence[ChatMessage], *, options: dict[str, Any], keep_alive: str | int
    ) -> AsyncGenerator[ChatChunk, None]:
        model = self.canonical(model_id)
        body = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "options": options,
            "keep_alive": keep_alive,
        }
        for client in self._clients_for(model):
            try:
                # Closed here, not whenever the loop finalizes it: its stream and connection go back at once.
                async with aclosing(self._chat_on(client, model, body)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            except BackendUnreachable as exc:
                error = exc  # nothing reached that host, so nothing was streamed: try the next one
        raise error

    async def _chat_on(self, client: HostClient, model: str, body: dict) -> AsyncGenerator[ChatChunk, None]:
        got_text = False
        # A model not in memory there loads before its first byte: allow the load timeout for that wait.
        host = self._host(host_url(client))
        state = host.models.get(model) if host else None
        read = client.read_timeout + (0 if state and state.loaded else self.load_timeout)
        with self.attempt(client, model) as attempt:
            try:
                async with self.streaming(client, "POST", "/api/chat", json=body, read_timeout=read) as resp:
                    if resp.status >= 400:
                        raise translate_status(await fetched(resp), model, loading=False)
                    batches = line_batches(resp)
                    async for lines in batches:
                        chunk, error = self._merge(model, lines, got_text)
                        if chunk is not None and chunk.done:
                            await finish_body(batches)  # the connection is reused by the next chat
                        if chunk is not None:
                            attempt.served()  # the model answers there: the next request goes there too
                            got_text = got_text or bool(chunk.text)
                            yield chunk
                        if error is not None:
                            raise error
                        if chunk is not None and chunk.done:
                            return
            except aiohttp.ClientError as exc:
                raise self.stream_error(exc, client, model) from exc
            raise StreamBroken(f"the stream from {self.where(client)} ended without its final line", model=model,
                               host=host_url(client))

    @classmethod
    def _merge(cls, model: str, lines: list[bytes], got_text: bool) -> tuple[ChatChunk | None, BackendError | None]:
        """One read's lines as one chunk (their text joined), and the error a bad line raised, if any:
        the text before a bad line still reaches the client."""
        texts: list[str] = []
        for line in lines:
            if not line.strip():
                continue
            try:  # the common line, a token, read without building it; anything else in full
                token = _TOKEN_LINE.decode(line)
                text = token.message.content if token.message is not None else None
                if token.done is False and token.error is UNSET and text.__class__ is str:
                    if text:
                        texts.append(text)
                    continue
            except msgspec.MsgspecError:
                pass
            try:
                piece = cls._chunk(model, line, got_text or bool(texts))
            except BackendError as exc:
                return (ChatChunk("".join(texts), count=len(texts)) if texts else None), exc
            if piece.text:
                texts.append(piece.text)
            if piece.done:
                piece.text, piece.count = "".join(texts), len(texts)
                return piece, None
        return (ChatChunk("".join(texts), count=len(texts)) if texts else None), None

    @staticmethod
    def _chunk(model: str, line: bytes | str, got_text: bool) -> ChatChunk:
        """One NDJSON line as a chunk; a line of the wrong shape breaks the stream (StreamBroken)."""
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise StreamBroken(f"the backend sent a line that is not JSON: {_show(line)}", model=model) from exc
        if not isinstance(data, dict):
            raise StreamBroken(f"the backend sent a line that is not a JSON object: {_show(line)}", model=model)
        if data.get("error") is not None:  # an "error": null is no error
            why = str(data["error"])
            if not got_text and _is_load_failure(why):
                raise ModelLoadFailed(f"model '{model}' failed to load ({why})", model=model)
            raise StreamBroken(f"the backend stopped the reply: {why}", model=model)
        message = data.get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        done = data.get("done")
        if not isinstance(message, dict) or not isinstance(text, str | None) or not isinstance(done, bool | None):
            raise StreamBroken(f"the backend sent a line of the wrong shape: {_show(line)}", model=model)
        if not done:
            return ChatChunk(text=text or "")
        load_ns = _number(data.get("load_duration"))
        return ChatChunk(
            text=text or "",
            done=True,
            tokens=_count(data.get("eval_count")),
            prompt_tokens=_count(data.get("prompt_eval_count")),
            load_ms=round(load_ns / NS_PER_MS, 3) if load_ns is not None else None,
            done_reason=data.get("done_reason") if isinstance(data.get("done_reason"), str) else None,
        )


def _show(line: bytes | str) -> str:
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    return repr(text[:80])


def _number(value: Any) -> float | None:
    """A figure from the backend, or None when it sent something else."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
