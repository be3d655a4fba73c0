"""OpenAI's API, translated (SPEC F16): request and answer shapes only; the rules are in ``compat/service.py``.

Models are tiers: ``id`` is the tier slug, with the backing model, display
name, description and status as extra fields. A completion's ``model`` is the
tier that answered (another than the one asked when a fallback answered), and
``kynsey`` says who answered and why. Errors are OpenAI's
``{"error": {"message", "type", "param", "code"}}`` with the status codes the
``openai`` SDK maps to its exceptions (400, 401, 403, 404, 409, 429, 5xx).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from kynsey.backends.base import ChatMessage
from kynsey.catalog import TierProfile
from kynsey.catalog.schema import INT32
from kynsey.compat.service import ChatRequest, Exchange
from kynsey.errors import InvalidRequest
from kynsey.ratelimit import RateInfo
from kynsey.web.schemas import _Body

STARTED = int(time.time())  # models' 'created': when this process loaded its catalog
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error", 429: "rate_limit_error"}
TIER_CODES = ("unknown_tier", "tier_locked", "feature_disabled", "tier_unavailable")
# Kynsey's codes that OpenAI's API has its own name for: clients test for these (e.g. to trim a history).
OPENAI_CODES = {"prompt_too_long": "context_length_exceeded"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Accepted and ignored: they change nothing a client relies on.
IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "logit_bias", "reasoning_effort",
           "prompt_cache_key", "safety_identifier", "verbosity")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class MessageIn(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: Any = None
    tool_call_id: Any = None
    function_call: Any = None
    refusal: Any = None


class StreamOptions(_Body):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatCompletionIn(_Body):
    model: str | None = Field(None, max_length=64)
    messages: list[MessageIn] = Field(max_length=10_000)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # Bounded so that no value reaches a backend that it cannot take (as ``catalog.schema.ClientOptions``).
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=INT32)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT32)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    top_k: int | None = Field(None, ge=1, le=INT32)  # not OpenAI's, but vLLM's and llama.cpp's servers take it
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    modalities: list[str] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    logit_bias: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    verbosity: str | None = None


def chat_request(body: ChatCompletionIn, request_id: str) -> ChatRequest:
    _refuse_unsupported(body)
    options = {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "num_predict": body.max_completion_tokens or body.max_tokens,
        "stop": [body.stop] if isinstance(body.stop, str) else body.stop,
        "seed": body.seed,
        "top_k": body.top_k,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
    }
    if body.stop is not None and not isinstance(body.stop, str) and len(body.stop) > 4:
        raise InvalidRequest("stop holds at most 4 sequences", field="stop")
    messages = [_message(i, m) for i, m in enumerate(body.messages)]
    return ChatRequest("openai", body.model, messages, {k: v for k, v in options.items() if v is not None}, request_id)


def _refuse_unsupported(body: ChatCompletionIn) -> None:
    """Fields whose meaning Kynsey cannot honour are refused, not silently dropped."""
    if body.n not in (None, 1):
        raise InvalidRequest("n must be 1: one choice per request", field="n")
    if body.tools or body.functions or body.function_call not in (None, "none") or body.tool_choice not in (None, "none"):
        raise InvalidRequest("tools and function calling are not supported", field="tools")
    if body.response_format and body.response_format.get("type") not in (None, "text"):
        raise InvalidRequest("only response_format {'type': 'text'} is supported", field="response_format")
    if body.logprobs or body.top_logprobs:
        raise InvalidRequest("logprobs are not supported", field="logprobs")
    if body.modalities and set(body.modalities) != {"text"}:
        raise InvalidRequest("only the 'text' modality is supported", field="modalities")


def _message(index: int, message: MessageIn) -> ChatMessage:
    role = ROLES.get(message.role)
    if role is None or message.tool_calls or message.function_call:
        raise InvalidRequest(f"messages.{index}: tool and function messages are not supported",
                             field=f"messages.{index}.role")
    content = message.content
    if isinstance(content, list):
        if any(part.type != "text" or part.text is None for part in content):
            raise InvalidRequest(f"messages.{index}: only text content parts are supported",
                                 field=f"messages.{index}.content")
        content = "".join(part.text or "" for part in content)
    return ChatMessage(role, content or "")


# -- models ---------------------------------------------------------------------------------
def model_object(tier: TierProfile, model: str, status: str) -> dict[str, Any]:
    return {"id": tier.tier, "object": "model", "created": STARTED, "owned_by": "kynsey",
            "display_name": tier.display_name, "model_id": model, "description": tier.description, "status": status}


def model_list(models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": models}


# -- answers ----------------------------------------------------------------------------------
def answer_headers(exchange: Exchange) -> dict[str, str]:
    """Rate-limit headers in both spellings, and who answers."""
    answer = exchange.answer
    headers = {**rate_headers(exchange.rate), "X-Kynsey-Tier": answer.tier.tier}
    if answer.fell_back:
        headers["X-Kynsey-Fallback-From"] = answer.asked.tier
    return headers


def rate_headers(rate: RateInfo) -> dict[str, str]:
    return {**rate.headers(), "x-ratelimit-limit-requests": str(rate.limit),
            "x-ratelimit-remaining-requests": str(rate.remaining), "x-ratelimit-reset-requests": f"{rate.reset_s}s"}


def _who(exchange: Exchange) -> dict[str, Any]:
    answer = exchange.answer
    who: dict[str, Any] = {"tier": answer.tier.tier, "model": answer.model, "display_name": answer.tier.display_name}
    if answer.fell_back:
        who |= {"fallback_from": answer.asked.tier, "fallback_reason": answer.fallback_reason}
    return who


def _usage(end: dict[str, Any]) -> dict[str, int]:
    prompt, completion = end["prompt_tokens"], end["completion_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(exchange: Exchange, text: str) -> dict[str, Any]:
    end = exchange.end()
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": exchange.answer.tier.tier, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": end["done_reason"]}],
        "usage": _usage(end), "kynsey": _who(exchange) | {"ttft_ms": exchange.answer.figures()["ttft_ms"]},
    }


async def stream(exchange: Exchange, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE ``chat.completion.chunk`` events, then ``[DONE]``; a cut-off reply ends with an error event instead."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": exchange.answer.tier.tier, "system_fingerprint": None}
    usage = {"usage": None} if include_usage else {}
    # Every text chunk is the same bytes around its text: encode them once.
    prefix, _, suffix = _event({**head, "choices": [{"index": 0, "delta": {"content": "\0"}, "logprobs": None,
                                                     "finish_reason": None}], **usage}).partition(b'"\\u0000"')
    try:
        yield _event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                           "finish_reason": None}], **usage, "kynsey": _who(exchange)})
        async for text in exchange.texts():
            yield prefix + orjson.dumps(text) + suffix
        if (error := exchange.error) is not None:
            yield _event({"error": {"message": error[1], "type": "server_error", "param": None, "code": error[0]}})
            return
        end = exchange.end()
        yield _event({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                           "finish_reason": end["done_reason"]}], **usage})
        if include_usage:
            yield _event({**head, "choices": [], "usage": _usage(end)})
        yield b"data: [DONE]\n\n"
    finally:
        await exchange.aclose()


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


# -- errors -------------------------------------------------------------------------------------
def error_body(status: int, code: str, message: str, details: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Kynsey's error in OpenAI's shape; a 422 (bad request) is OpenAI's 400."""
    status = 400 if status == 422 else status
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    problems = details.get("problems") or [{}]
    param = details.get("field") or problems[0].get("field") or ("model" if code in TIER_CODES else None)
    extra = {k: v for k, v in details.items() if k != "field"}
    return status, {"error": {"message": message, "type": kind, "param": param, "code": OPENAI_CODES.get(code, code),
                              **extra}}
