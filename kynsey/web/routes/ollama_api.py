"""Ollama-compatible endpoints (SPEC F16), served under /ollama and at the root (kynsey/compat/shapes.py):
thin; shapes in kynsey/compat/ollama.py, rules in compat/service.py."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from kynsey.backends.base import ModelState
from kynsey.catalog import TierProfile
from kynsey.compat import ollama
from kynsey.compat.service import ChatRequest, load_only, named_tier, open_exchange, usable_tiers
from kynsey.errors import InvalidRequest
from kynsey.runtime import Runtime
from kynsey.storage.models import User
from kynsey.web.deps import RequestIdDep, RuntimeDep, UserDep
from kynsey.web.streams import ExchangeStream

router = APIRouter(tags=["ollama"])
mount = APIRouter(prefix="/ollama", tags=["ollama"])
NDJSON = "application/x-ndjson"


@mount.get("", response_class=PlainTextResponse)
@mount.get("/", response_class=PlainTextResponse)
async def running() -> str:
    return "Ollama is running"


@router.get("/api/version")
async def version() -> dict:
    return {"version": ollama.API_VERSION}


@router.get("/api/tags")
async def tags(rt: RuntimeDep, user: UserDep) -> dict:
    return {"models": [ollama.model_entry(*found) for found in await _models(rt, user)]}


@router.get("/api/ps")
async def running_models(rt: RuntimeDep, user: UserDep) -> dict:
    found = await _models(rt, user)
    return {"models": [ollama.running_entry(tier, model, state) for tier, model, state in found if state and state.loaded]}


async def _models(rt: Runtime, user: User) -> list[tuple[TierProfile, str, ModelState | None]]:
    """The tiers the caller may name, each with its backing model and that model's state on its backend."""
    catalog, backends = rt.snapshot()
    found = []
    for tier in await usable_tiers(rt, catalog, user):
        backend = backends[tier.backend]
        model = backend.canonical(tier.model_id)
        found.append((tier, model, backend.snapshot.model(model)))
    return found


@router.post("/api/show")
async def show(body: ollama.ShowIn, rt: RuntimeDep, user: UserDep) -> dict:
    name = body.model or body.name
    if not name:
        raise InvalidRequest("model is required", field="model")
    catalog, backends = rt.snapshot()
    tier = await named_tier(rt, catalog, user, name)
    backend = backends[tier.backend]
    model = backend.canonical(tier.model_id)
    return ollama.show(tier, model, backend.snapshot.model(model))


@router.post("/api/chat")
async def chat(body: ollama.ChatIn, rt: RuntimeDep, user: UserDep, rid: RequestIdDep) -> Response:
    request = ollama.chat_request(body, rid)
    return await _answer(request, body.stream is not False, rt, user, chat=True, load=not body.messages,
                         keep_alive=body.keep_alive)


@router.post("/api/generate")
async def generate(body: ollama.GenerateIn, rt: RuntimeDep, user: UserDep, rid: RequestIdDep) -> Response:
    request = ollama.generate_request(body, rid)
    return await _answer(request, body.stream is not False, rt, user, chat=False, load=not body.prompt,
                         keep_alive=body.keep_alive)


async def _answer(request: ChatRequest, streaming: bool, rt, user, *, chat: bool, load: bool,
                  keep_alive: str | int | float | None) -> Response:
    if load:  # Ollama's load (or, with keep_alive 0, unload) request: nothing to answer
        unload = ollama.unloads(keep_alive)
        tier = await load_only(rt, user, request, warm=not unload)
        return JSONResponse(ollama.load_only(tier, chat=chat, unload=unload))
    exchange = await open_exchange(rt, user, request)
    if streaming:
        return ExchangeStream(exchange, ollama.stream(exchange, chat=chat), media_type=NDJSON)
    return JSONResponse(ollama.answer(exchange, await exchange.text(), chat=chat))
