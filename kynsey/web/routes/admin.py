"""The admin page's API: users and their plans, and the audit log (SPEC F7, F9, F14).

Every route here takes ``AdminDep``: a non-admin gets 403 ``forbidden``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from kynsey.accounts import service as accounts
from kynsey.audit.query import AuditFilter, entry_public, recent
from kynsey.catalog.reload import reload_catalog
from kynsey.web.deps import AdminDep, DbDep, FilterText, RequestIdDep, RowId, RuntimeDep
from kynsey.web.routes.auth import user_public
from kynsey.web.schemas import AdminUsersPublic, AuditPagePublic, PlanIn, UserPublic

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/users")
async def list_users(rt: RuntimeDep, db: DbDep, admin: AdminDep) -> AdminUsersPublic:
    users = await accounts.list_users(db)
    return AdminUsersPublic(users=[await user_public(rt, u) for u in users], plans=list(rt.catalog.plans))


@router.put("/users/{name}/plan")
async def put_plan(name: str, body: PlanIn, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> UserPublic:
    await accounts.change_plan(db, rt.catalog, name, body.plan, actor=admin.name, request_id=rid)
    return await user_public(rt, await accounts.get_user(db, name))


@router.get("/audit")
async def list_audit(
    db: DbDep,
    admin: AdminDep,
    user: FilterText = None,
    tier: FilterText = None,
    result: FilterText = None,
    action: FilterText = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: RowId = None,
) -> AuditPagePublic:
    where = AuditFilter(user=user or None, tier=tier or None, result=result or None, action=action or None)
    rows = await recent(db, where, limit=limit, before_id=before_id)
    more = len(rows) == limit
    return AuditPagePublic(entries=[entry_public(r) for r in rows], next_before_id=rows[-1].id if rows and more else None)


@router.post("/catalog/reload")
async def reload_catalog_route(rt: RuntimeDep, admin: AdminDep, rid: RequestIdDep) -> dict:
    """Load the tier catalog file again (audited); an invalid file changes nothing and answers 422."""
    result = await reload_catalog(rt, actor=admin.name, request_id=rid)
    return {"source": result.source, "tiers": result.tiers, "rebuilt_backends": result.rebuilt_backends}
