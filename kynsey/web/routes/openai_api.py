"""OpenAI-compatible endpoints (SPEC F16): thin; shapes in kynsey/compat/openai.py, rules in compat/service.py."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from kynsey.compat import openai
from kynsey.compat.service import named_tier, open_exchange, usable_tiers
from kynsey.web.deps import RequestIdDep, RuntimeDep, UserDep
from kynsey.web.routes.conversations import SSE_HEADERS
from kynsey.web.streams import ExchangeStream

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(rt: RuntimeDep, user: UserDep) -> dict:
    catalog, backends = rt.snapshot()
    tiers = await usable_tiers(rt, catalog, user)
    return openai.model_list([openai.model_object(t, backends[t.backend].canonical(t.model_id), rt.tier_status(t).status)
                              for t in tiers])


@router.get("/models/{model}")
async def get_model(model: str, rt: RuntimeDep, user: UserDep) -> dict:
    catalog, backends = rt.snapshot()
    tier = await named_tier(rt, catalog, user, model)
    return openai.model_object(tier, backends[tier.backend].canonical(tier.model_id), rt.tier_status(tier).status)


@router.post("/chat/completions")
async def chat_completions(body: openai.ChatCompletionIn, rt: RuntimeDep, user: UserDep, rid: RequestIdDep) -> Response:
    exchange = await open_exchange(rt, user, openai.chat_request(body, rid))
    headers = openai.answer_headers(exchange)
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        return ExchangeStream(exchange, openai.stream(exchange, usage), media_type="text/event-stream",
                              headers={**SSE_HEADERS, **headers})
    return JSONResponse(openai.completion(exchange, await exchange.text()), headers=headers)
