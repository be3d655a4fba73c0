"""Ollama's API, translated (SPEC F16): request and answer shapes only; the rules are in ``compat/service.py``.

Tiers are models named ``<tier>:latest`` (a name without the tag means the
same, as in Ollama). Answers use Ollama's field names and nanosecond
durations; ``model`` in an answer is the tier that answered (another than the
one asked when a fallback answered). Streams are NDJSON; a reply cut off
mid-way ends with an ``{"error": "..."}`` line, as Ollama's do; errors before
an answer are ``{"error": "..."}`` with an HTTP status.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kynsey.backends.base import ChatMessage, ModelState
from kynsey.backends.keep_alive import keep_alive_seconds
from kynsey.catalog import TierProfile
from kynsey.catalog.schema import ClientOptions
from kynsey.compat.service import ChatRequest, Exchange
from kynsey.errors import BackendError, InvalidRequest
from kynsey.web.schemas import check_text

# The Ollama API version whose fields these endpoints follow (clients read it to pick features).
API_VERSION = "0.12.6"
MODIFIED_AT = "2025-01-01T00:00:00Z"


class _Body(BaseModel):
    """Fields Kynsey does not know are ignored, as Ollama's server ignores them (clients send newer ones)."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*")
    @classmethod
    def _storable(cls, value):
        return check_text(value) if isinstance(value, str) else value


class MessageIn(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class _Request(_Body):
    model: str = Field(min_length=1, max_length=80)
    stream: bool | None = True
    format: str | dict[str, Any] | None = None
    options: ClientOptions | None = None
    keep_alive: str | int | float | None = None  # the tier's keep_alive holds
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class ChatIn(_Request):
    messages: list[MessageIn] = Field(default_factory=list, max_length=10_000)
    tools: list[Any] | None = None


class GenerateIn(_Request):
    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None
    width: int | None = None  # image generation: refused
    height: int | None = None
    steps: int | None = None


class ShowIn(_Body):
    model: str | None = Field(None, max_length=80)
    name: str | None = Field(None, max_length=80)  # older clients
    verbose: bool | None = None


def _refuse_unsupported(body: _Request) -> None:
    if body.format not in (None, ""):
        raise InvalidRequest("format (structured output) is not supported", field="format")
    if body.think not in (None, False):
        raise InvalidRequest("think is not supported by these models", field="think")
    if getattr(body, "tools", None) or getattr(body, "images", None) or getattr(body, "steps", None):
        raise InvalidRequest("tools and images are not supported", field="tools")
    if body.logprobs or body.top_logprobs:
        raise InvalidRequest("logprobs are not supported", field="logprobs")


def _options(options: ClientOptions | None) -> dict[str, Any]:
    """The client's sampling options; runner options (num_ctx, ...) are the tier's and dropped here."""
    return options.model_dump(exclude_none=True) if options is not None else {}


def chat_request(body: ChatIn, request_id: str) -> ChatRequest:
    _refuse_unsupported(body)
    for i, m in enumerate(body.messages):
        if m.images or m.tool_calls or m.role == "tool":
            raise InvalidRequest(f"messages.{i}: tool messages and images are not supported", field=f"messages.{i}")
    messages = [ChatMessage(m.role, m.content) for m in body.messages]
    return ChatRequest("ollama", body.model, messages, _options(body.options), request_id)


def generate_request(body: GenerateIn, request_id: str) -> ChatRequest:
    _refuse_unsupported(body)
    if body.suffix or body.template or body.context or body.raw:
        raise InvalidRequest("suffix, template, context and raw are not supported", field="prompt")
    messages = ([ChatMessage("system", body.system)] if body.system else []) + [ChatMessage("user", body.prompt)]
    return ChatRequest("ollama", body.model, messages, _options(body.options), request_id)


# -- models -------------------------------------------------------------------------------------
def name(tier: TierProfile) -> str:
    return f"{tier.tier}:latest"


def _details(state: ModelState | None) -> dict[str, Any]:
    details = dict(state.details) if state else {}
    return {"parent_model": details.get("parent_model", ""), "format": details.get("format", "gguf"),
            "family": details.get("family", ""), "families": details.get("families") or [],
            "parameter_size": details.get("parameter_size", ""),
            "quantization_level": details.get("quantization_level", "")}


def model_entry(tier: TierProfile, model: str, state: ModelState | None) -> dict[str, Any]:
    digest = hashlib.sha256(f"{tier.tier}\0{model}".encode()).hexdigest()
    return {"name": name(tier), "model": name(tier), "modified_at": MODIFIED_AT,
            "size": (state.size if state else None) or 0, "digest": digest, "details": _details(state)}


def running_entry(tier: TierProfile, model: str, state: ModelState) -> dict[str, Any]:
    entry = model_entry(tier, model, state)
    del entry["modified_at"]
    return entry | {"expires_at": state.expires_at or MODIFIED_AT, "size_vram": state.size_vram or 0}


def show(tier: TierProfile, model: str, state: ModelState | None) -> dict[str, Any]:
    details = _details(state)
    parameters = "\n".join(f"{k} {v}" for k, v in tier.options.items())
    info = {"general.architecture": details["family"], "kynsey.tier": tier.tier,
            "kynsey.display_name": tier.display_name, "kynsey.model": model, "kynsey.description": tier.description}
    return {"modelfile": f"# Kynsey tier {tier.tier}: {tier.display_name} ({model})\n", "parameters": parameters,
            "template": "{{ .Prompt }}", "details": details, "model_info": info, "capabilities": ["completion"],
            "modified_at": MODIFIED_AT}


# -- answers ------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _final(exchange: Exchange) -> dict[str, Any]:
    end = exchange.end()
    return {"done": True, "done_reason": end["done_reason"], "total_duration": end["total_ns"],
            "load_duration": end["load_ns"], "prompt_eval_count": end["prompt_tokens"],
            "prompt_eval_duration": end["prompt_eval_ns"], "eval_count": end["completion_tokens"],
            "eval_duration": end["eval_ns"]}


def _piece(chat: bool, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}


def answer(exchange: Exchange, text: str, *, chat: bool) -> dict[str, Any]:
    return {"model": name(exchange.answer.tier), "created_at": _now(), **_piece(chat, text), **_final(exchange)}


async def stream(exchange: Exchange, *, chat: bool) -> AsyncIterator[bytes]:
    """NDJSON lines, the last with ``done`` and the figures; a cut-off reply ends with an ``error`` line."""
    head = {"model": name(exchange.answer.tier), "created_at": _now()}
    prefix, _, suffix = _line({**head, **_piece(chat, "\0"), "done": False}).partition(b'"\\u0000"')
    try:
        async for text in exchange.texts():
            yield prefix + orjson.dumps(text) + suffix
        if (error := exchange.error) is not None:
            yield _line({"error": error[1]})
            return
        yield _line({"model": head["model"], "created_at": _now(), **_piece(chat, ""), **_final(exchange)})
    finally:
        await exchange.aclose()


def load_only(tier: TierProfile, *, chat: bool, unload: bool = False) -> dict[str, Any]:
    """Ollama's answer to an empty prompt (a load request, or with ``unload`` an unload request): done at once."""
    return {"model": name(tier), "created_at": _now(), **_piece(chat, ""), "done": True,
            "done_reason": "unload" if unload else "load"}


def unloads(keep_alive: str | int | float | None) -> bool:
    """Whether a request's ``keep_alive`` is zero: with nothing to answer, Ollama's unload request."""
    if keep_alive is None or isinstance(keep_alive, bool):
        return False
    try:
        return keep_alive_seconds(keep_alive) == 0
    except BackendError:  # a keep_alive Kynsey cannot read is ignored, as every keep_alive is
        return False


def _line(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data) + b"\n"


def error_body(status: int, code: str, message: str, details: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Kynsey's error in Ollama's shape ``{"error": "..."}``; a bad request is Ollama's 400."""
    return (400 if status == 422 else status), {"error": message}
