"""The tier endpoints of the plan: list, switch, status (SPEC F4)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from kynsey.switching.listing import list_tiers, status_report
from kynsey.switching.service import switch_tier, unload_tier, warm_ahead
from kynsey.web.deps import AdminDep, DbDep, RequestIdDep, RuntimeDep, UserDep
from kynsey.web.schemas import SwitchIn, SwitchPublic, TierListPublic, UnloadPublic, WarmIn, WarmPublic

router = APIRouter(prefix="/api/models", tags=["tiers"])


@router.get("/tiers")
async def get_tiers(rt: RuntimeDep, user: UserDep) -> TierListPublic:
    await rt.monitor.wait_first()
    return TierListPublic.model_validate(list_tiers(rt, user, switching=await rt.flags.enabled_for(user)))


@router.post("/tier", responses={202: {"description": "switched; the model is still loading"}})
async def post_tier(body: SwitchIn, response: Response, rt: RuntimeDep, db: DbDep, user: UserDep, rid: RequestIdDep) -> SwitchPublic:
    result = await switch_tier(rt, db, user, body.tier, request_id=rid)
    tier = rt.catalog.tiers[result.tier]
    if result.rate:
        response.headers.update(result.rate.headers())
    if result.accepted_only:
        response.status_code = 202
    return SwitchPublic(
        tier=result.tier,
        previous=result.previous,
        display_name=tier.display_name,
        model_id=tier.model_id,
        status=result.status,
        switch_ms=result.latency_ms,
        load_ms=result.load_ms,
    )


@router.get("/status")
async def get_status(rt: RuntimeDep, user: UserDep) -> dict:
    await rt.monitor.wait_first()
    return status_report(rt, admin=user.is_admin)


@router.post("/warm", status_code=202)
async def post_warm(body: WarmIn, rt: RuntimeDep, user: UserDep) -> WarmPublic:
    """Load a tier's model ahead of a switch (the page calls this when the selector opens)."""
    return WarmPublic(tier=body.tier, status=await warm_ahead(rt, user, body.tier))


@router.post("/{tier}/unload")
async def post_unload(tier: str, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> UnloadPublic:
    """Free a tier's model (admin); waits for the streams using it to finish first."""
    return UnloadPublic.model_validate(await unload_tier(rt, db, admin, tier, request_id=rid))
