"""The running catalog with live status, for operators and ``kynsey tiers`` (SPEC F3, F15).

Anyone may ask (like ``/readyz``): it says which catalog this server runs and each
tier's status. A credential that is sent must be valid (else 401). An admin (bearer token or page session) also gets backend hosts,
the reason behind each status, model files, and user counts per plan.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from kynsey.accounts.service import plans_in_use
from kynsey.switching.overview import overview
from kynsey.web.deps import SESSION_COOKIE, DbDep, RuntimeDep, current_user

router = APIRouter(prefix="/api/catalog", tags=["tiers"])


@router.get("/status")
async def catalog_status(request: Request, rt: RuntimeDep, db: DbDep) -> dict:
    admin = False
    if request.headers.get("authorization") or request.cookies.get(SESSION_COOKIE):
        admin = (await current_user(request, rt)).is_admin  # a bad credential is a 401, not the public view
    await rt.monitor.wait_first()
    return overview(rt, detail=admin, plan_users=await plans_in_use(db) if admin else None)
