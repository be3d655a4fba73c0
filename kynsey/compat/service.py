"""The rules of the compatible APIs (SPEC F16): the page's rules, through other doors.

The OpenAI and Ollama translators (``compat/openai.py``, ``compat/ollama.py``)
hand a ``ChatRequest`` here and get an ``Exchange`` back, or a domain error.

- **Which tier.** The request's model is a tier slug (Ollama's ``:latest`` tag
  allowed); ``"auto"`` or none is the caller's current tier, exactly as the
  page's chat picks it (``answering_tier``). A named tier must be one the
  caller's plan grants (else ``TierLocked`` with the upgrade prompt) and, while
  tier switching is not rolled out to the caller, the default tier (else
  ``FeatureDisabled``): the page would answer them from the default. Naming a
  tier does not switch: the stored active tier stays as it is.
- **Limits.** The chat rate limit per user and tier, shared with the page.
- **Answer.** The answer core (``chat/answer.py``): the tier's fallback chain
  (tiers the plan grants), circuits, leases, metrics and the rollback guard.
- **Options.** A client may set ``CLIENT_OPTIONS`` (Ollama's names; OpenAI's
  ``max_tokens`` is ``num_predict``); the tier's catalog value is the default.
  A tier's ``pinned`` options keep the tier's value (or none) whatever the
  client sends. Runner options (``num_ctx``, ...) are always the tier's: a
  different ``num_ctx`` would make the backend reload the model.
- **Audit.** A request for a tier the caller may not use (``tier_locked``,
  ``feature_disabled``) is audited (action ``api_chat``), as a refused switch
  is. Answered requests are not, as the page's messages are not: they are in
  the metrics (``kynsey_compat_requests_total``, and every reply metric).
- **Storing.** Stateless by default: the client sends the history. With
  ``KYNSEY_COMPAT_STORE`` each chat also becomes a conversation on the page,
  written by the conversation path's own reply task (saved as it streams).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, get_args

from sqlalchemy.exc import SQLAlchemyError

from kynsey.audit import AuditRecord, append
from kynsey.backends.base import ChatMessage
from kynsey.catalog import Catalog, TierProfile
from kynsey.catalog.schema import ClientOption
from kynsey.chat.answer import Answer, fallback_chain
from kynsey.chat.live import LiveReply
from kynsey.chat.reply import reply_task
from kynsey.compat.store import StoredExchange, begin_exchange, shown
from kynsey.errors import (
    BackendError,
    FeatureDisabled,
    InvalidRequest,
    KynseyError,
    PermissionDenied,
)
from kynsey.ratelimit import RateInfo
from kynsey.runtime import Runtime
from kynsey.storage.models import User
from kynsey.switching.access import answering_tier, find_tier, require_tier

log = logging.getLogger(__name__)
CLIENT_OPTIONS = frozenset(get_args(ClientOption))
AUTO = ("", "auto")
# A stored exchange's error event back as its class (every BackendError is one level deep: kynsey/errors.py).
_BACKEND_ERROR_CLASSES: list[type[BackendError]] = [BackendError, *BackendError.__subclasses__()]
BACKEND_ERRORS = {cls.code: cls for cls in _BACKEND_ERROR_CLASSES}


@dataclass(slots=True)
class ChatRequest:
    """What the rules need of an OpenAI or Ollama chat request."""

    api: str  # openai | ollama
    model: str | None
    messages: list[ChatMessage]
    options: dict[str, Any] = field(default_factory=dict)  # CLIENT_OPTIONS only
    request_id: str = "-"


def tier_slug(model: str) -> str:
    """A tier's slug from a model name as clients send it ('pro', 'pro:latest')."""
    return model.removesuffix(":latest")


async def usable_tiers(rt: Runtime, catalog: Catalog, user: User) -> list[TierProfile]:
    """The tiers ``user`` may name now: those their plan grants, only the default while switching is off for them."""
    switching = await rt.flags.enabled_for(user)
    return [t for t in catalog.tiers.values()
            if catalog.plan_allows(user.plan, t) and (switching or t.tier == catalog.default_tier)]


async def named_tier(rt: Runtime, catalog: Catalog, user: User, model: str) -> TierProfile:
    """The tier ``model`` names, if ``user`` may use it; else UnknownTier, FeatureDisabled or TierLocked."""
    tier = find_tier(catalog, tier_slug(model))
    if tier.tier != catalog.default_tier and not await rt.flags.enabled_for(user):
        raise FeatureDisabled(f"tier switching is not enabled for your account; only the default tier "
                              f"'{catalog.default_tier}' (or 'auto') answers you", tier=tier.tier)
    return require_tier(catalog, user, tier.tier)


def effective_options(tier: TierProfile, requested: dict[str, Any]) -> dict[str, Any]:
    """The tier's options with the client's sampling options over them, except those the tier pins."""
    options = dict(tier.options)
    for name, value in requested.items():
        if name not in tier.pinned:
            options[name] = value
    return options


def check_messages(messages: list[ChatMessage], limit: int) -> None:
    if not messages:
        raise InvalidRequest("messages must hold at least one message", field="messages")
    for i, message in enumerate(messages):
        if len(message.content) > limit:
            raise InvalidRequest(f"a message has at most {limit} characters; message {i} has {len(message.content)}",
                                 field=f"messages.{i}.content")


class Exchange:
    """A compatible API's chat once a tier answers: its text as it comes, then how it ended."""

    def __init__(self, answer: Answer, rate: RateInfo, live: LiveReply | None = None) -> None:
        self.answer, self.rate, self.live = answer, rate, live
        self.failed: tuple[str, str] | None = None  # (code, message) of a stored reply that was cut off
        self.ended_at: float | None = None

    def texts(self) -> AsyncIterator[str]:
        """The reply's text, one piece per backend read; then ``error`` says whether it was cut off."""
        return self.answer.texts() if self.live is None else self._stored_texts(self.live)

    async def text(self) -> str:
        """The whole reply (a request that does not stream); BackendError when it was cut off."""
        try:
            text = "".join([piece async for piece in self.texts()])
        finally:
            await self.aclose()
        if (error := self.error) is not None:
            raise BACKEND_ERRORS.get(error[0], BackendError)(error[1])
        return text

    async def _stored_texts(self, live: LiveReply) -> AsyncIterator[str]:
        queue = live.subscribe()
        try:
            while (item := await queue.get()) is not None:
                name, data = item
                if name == "delta":
                    yield data["text"]
                elif name == "error":
                    self.failed = (data["code"], data["message"])
        finally:
            live.unsubscribe(queue)

    @property
    def error(self) -> tuple[str, str] | None:
        """(code, message) when the reply was cut off, else None."""
        if self.answer.error is not None:
            return self.answer.error.code, f"the reply was cut off: {self.answer.error.message}"
        return self.failed

    async def aclose(self) -> None:
        """Stateless: stop the answer (a client that left stops it). Stored: the reply goes on and is saved."""
        if self.live is None:
            await self.answer.aclose()

    def end(self) -> dict[str, Any]:
        """The final figures: tokens both ways, why it stopped, and timings in ns (Ollama's unit)."""
        answer, final = self.answer, self.answer.final
        end = self.ended_at = self.ended_at or time.perf_counter()
        figures = answer.figures()
        load_ns = int((final.load_ms or 0) * 1e6) if final else 0
        ttft_ns = int((answer.ttft_ms or 0) * 1e6)
        return {
            "prompt_tokens": (final.prompt_tokens if final else None) or 0,
            "completion_tokens": figures["tokens"] or 0,
            "done_reason": "length" if final and final.done_reason == "length" else "stop",
            "total_ns": int((end - answer.started) * 1e9),
            "load_ns": load_ns,
            "prompt_eval_ns": max(0, ttft_ns - load_ns),
            "eval_ns": int((end - answer.first_at) * 1e9) if answer.first_at else 0,
        }


async def open_exchange(rt: Runtime, user: User, request: ChatRequest) -> Exchange:
    """Pick the tier, count the request, and get a first chunk from it or a fallback; BackendError if none answers."""
    try:
        exchange = await _open(rt, user, request)
    except KynseyError as exc:
        rt.metrics.compat_request(request.api, exc.code)
        raise
    rt.metrics.compat_request(request.api, "fallback" if exchange.answer.fell_back else "ok")
    return exchange


async def _open(rt: Runtime, user: User, request: ChatRequest) -> Exchange:
    started = time.perf_counter()
    catalog, backends = rt.snapshot()
    check_messages(request.messages, rt.settings.max_message_chars)
    tier = await _tier_for(rt, catalog, user, request)
    rate = await rt.limiter.hit(rt.settings.chat_rate_limit, "chat", str(user.id), tier.tier)
    requested = request.options

    def options_for(t: TierProfile) -> dict[str, Any]:
        return effective_options(t, requested)

    answer = Answer(rt, backends, fallback_chain(catalog, user.plan, tier), request.messages, started,
                    options_for if requested else None)
    if not rt.settings.compat_store:
        await answer.open()
        return Exchange(answer, rate)
    live = await _store(rt, user, request, answer, backends[tier.backend].canonical(tier.model_id))
    return Exchange(answer, rate, live)


async def load_only(rt: Runtime, user: User, request: ChatRequest, *, warm: bool = True) -> TierProfile:
    """A request with nothing to answer (Ollama's way to load a model): the tier, warmed when cold.
    Permission-checked (and a refusal audited) as a chat; counted against the warm-ahead limit.
    Without ``warm`` (Ollama's way to unload one) nothing is loaded or unloaded: the tier's model stays
    in memory as its ``keep_alive`` says, since other users may be using it."""
    catalog, _ = rt.snapshot()
    tier = await _tier_for(rt, catalog, user, request)
    await rt.limiter.hit(rt.settings.warm_rate_limit, "warm", str(user.id))
    if warm and rt.tier_status(tier).status == "cold":
        rt.warmer.start(tier)
    return tier


async def _tier_for(rt: Runtime, catalog: Catalog, user: User, request: ChatRequest) -> TierProfile:
    model = request.model
    try:
        if model is None or model.strip().lower() in AUTO:
            return await answering_tier(rt.flags, catalog, user)
        return await named_tier(rt, catalog, user, model)
    except PermissionDenied as exc:
        await _audit_refusal(rt, user, request, exc)
        raise


async def _audit_refusal(rt: Runtime, user: User, request: ChatRequest, exc: PermissionDenied) -> None:
    record = AuditRecord(actor=user.name, action="api_chat", subject=user.name, to_tier=exc.details.get("tier"),
                         result="denied" if exc.code == "tier_locked" else exc.code, reason=exc.message,
                         request_id=request.request_id, details={"api": request.api})
    try:
        async with rt.sessions() as db:
            await append(db, record)
    except SQLAlchemyError as err:  # the refusal stands; the log says what the audit could not keep
        log.error("could not audit a refused %s chat of %s: %s", request.api, user.name, err)


async def _store(rt: Runtime, user: User, request: ChatRequest, answer: Answer, model: str) -> LiveReply:
    """Commit the exchange as a conversation, start the conversation path's reply task, wait for its start."""
    messages = shown(request.messages)
    ids = [uuid.uuid4().hex for _ in messages]
    first_user = next((m.content for m in messages if m.role == "user"), "") or "API chat"
    title = " ".join(first_user.split())[:60]
    stored = StoredExchange(uuid.uuid4().hex, user.id, uuid.uuid4().hex, title, messages, ids, answer.asked.tier,
                            model, datetime.now(UTC))
    await rt.jobs.run(begin_exchange(stored))  # committed before any backend is called
    asked_id = next((mid for mid, m in zip(reversed(ids), reversed(messages), strict=True) if m.role == "user"), "")
    live = LiveReply(stored.reply_id, stored.conversation_id, user.id, asked_id)
    queue = live.subscribe()  # before the task starts: nothing is missed
    try:
        rt.live.run(live, reply_task(rt, live, answer))
        first = await queue.get()  # 'start', or 'error' when no tier answered (never the end before either)
    finally:
        live.unsubscribe(queue)
    name, data = first or ("error", {"code": "backend_error", "message": "the reply ended before it began"})
    if name == "error":  # no tier answered: the reply is saved 'failed'; the client gets the error
        raise BACKEND_ERRORS.get(data["code"], BackendError)(data["message"])
    return live
