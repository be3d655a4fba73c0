"""The admin page's API: users from creation to removal, upgrade requests, the audit log,
catalog reloads (SPEC F7, F9, F14, F19, F21).

Every route here takes ``AdminDep``: a non-admin gets 403 ``forbidden``. Each
action is one call into the accounts services, the same ones the CLI uses.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from kynsey.accounts import lifecycle, tokens, upgrades
from kynsey.accounts import service as accounts
from kynsey.audit.query import AuditFilter, entry_public, recent
from kynsey.catalog.reload import reload_catalog
from kynsey.runtime import Runtime
from kynsey.storage.models import User, iso_utc
from kynsey.web.deps import AdminDep, DbDep, FilterText, RequestIdDep, RowId, RuntimeDep
from kynsey.web.routes.auth import user_public
from kynsey.web.schemas import (
    AdminRoleIn,
    AdminUpgradeRequestListPublic,
    AdminUpgradeRequestPublic,
    AdminUserListPublic,
    AdminUserPublic,
    AuditEntryPublic,
    AuditPagePublic,
    CatalogReloadPublic,
    DisabledIn,
    LogoutAllIn,
    PasswordIn,
    PlanIn,
    RemovedPublic,
    TokenListPublic,
    TokenPublic,
    UserCreateIn,
    UserPublic,
)

router = APIRouter(prefix="/api/admin", tags=["admin"])

PathId = Annotated[int, Path(ge=1, le=2**31 - 1)]  # ids are 32-bit on PostgreSQL


async def admin_user(rt: Runtime, user: User, token_count: int) -> AdminUserPublic:
    public = await user_public(rt, user)
    return AdminUserPublic(
        **public.model_dump(), disabled=user.disabled_at is not None, created_at=iso_utc(user.created_at), tokens=token_count
    )


async def _fresh(rt: Runtime, db, name: str) -> AdminUserPublic:
    user = await accounts.get_user(db, name)
    return await admin_user(rt, user, (await tokens.count_tokens(db)).get(user.id, 0))


# -- users ------------------------------------------------------------------------------
@router.get("/users")
async def list_users(rt: RuntimeDep, db: DbDep, admin: AdminDep) -> AdminUserListPublic:
    users, counts = await accounts.list_users(db), await tokens.count_tokens(db)
    return AdminUserListPublic(users=[await admin_user(rt, u, counts.get(u.id, 0)) for u in users], plans=list(rt.catalog.plans))


@router.post("/users", status_code=201)
async def create_user(body: UserCreateIn, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> AdminUserPublic:
    user = await accounts.create_user(
        db, rt.catalog, body.name, body.plan, password=body.password, admin=body.admin, actor=admin.name, request_id=rid
    )
    return await admin_user(rt, user, 0)


@router.put("/users/{name}/plan")
async def put_plan(name: str, body: PlanIn, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> UserPublic:
    await accounts.change_plan(db, rt.catalog, name, body.plan, actor=admin.name, request_id=rid)
    return await user_public(rt, await accounts.get_user(db, name))


@router.put("/users/{name}/password")
async def put_password(name: str, body: PasswordIn, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> AdminUserPublic:
    """Reset a password; the user's browser sessions end."""
    await lifecycle.set_password(db, name, body.password, actor=admin.name, request_id=rid)
    return await _fresh(rt, db, name)


@router.put("/users/{name}/disabled")
async def put_disabled(name: str, body: DisabledIn, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> AdminUserPublic:
    await lifecycle.set_disabled(db, name, body.disabled, actor=admin.name, request_id=rid)
    return await _fresh(rt, db, name)


@router.put("/users/{name}/admin")
async def put_admin(name: str, body: AdminRoleIn, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> AdminUserPublic:
    await lifecycle.set_admin(db, name, body.admin, actor=admin.name, request_id=rid)
    return await _fresh(rt, db, name)


@router.delete("/users/{name}")
async def delete_user(name: str, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> RemovedPublic:
    """Delete a user with their conversations, tokens and sessions; the audit log keeps its entries."""
    return RemovedPublic.of(await lifecycle.delete_user(db, name, actor=admin.name, request_id=rid))


@router.post("/users/{name}/logout")
async def logout_user(name: str, body: LogoutAllIn, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> RemovedPublic:
    """Log a user out everywhere: end their browser sessions (and with ``tokens``, revoke their API tokens)."""
    return RemovedPublic.of(await lifecycle.log_out_everywhere(db, name, actor=admin.name, tokens=body.tokens, request_id=rid))


@router.get("/users/{name}/tokens")
async def list_tokens(name: str, db: DbDep, admin: AdminDep) -> TokenListPublic:
    user = await accounts.get_user(db, name)
    return TokenListPublic(tokens=[TokenPublic(**t.public()) for t in await tokens.list_tokens(db, user)])


@router.delete("/users/{name}/tokens/{token_id}")
async def revoke_token(name: str, token_id: PathId, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> TokenPublic:
    return TokenPublic(**(await tokens.revoke_token(db, token_id, actor=admin.name, owner=name, request_id=rid)).public())


# -- upgrade requests ---------------------------------------------------------------------
@router.get("/upgrade-requests")
async def list_upgrade_requests(
    db: DbDep, admin: AdminDep, status: Literal["pending", "approved", "declined"] | None = None
) -> AdminUpgradeRequestListPublic:
    rows = await upgrades.all_requests(db, status)
    return AdminUpgradeRequestListPublic(requests=[AdminUpgradeRequestPublic(**upgrades.request_public(r, n)) for r, n in rows])


async def _decide(rt: Runtime, db, request_id: int, approve: bool, admin: User, rid: str) -> AdminUpgradeRequestPublic:
    request, name = await upgrades.decide(db, rt.catalog, request_id, approve=approve, actor=admin.name, audit_id=rid)
    return AdminUpgradeRequestPublic(**upgrades.request_public(request, name))


@router.post("/upgrade-requests/{request_id}/approve")
async def approve(request_id: PathId, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> AdminUpgradeRequestPublic:
    """Approve: the user's plan becomes the one requested (audited ``upgrade_approve``)."""
    return await _decide(rt, db, request_id, True, admin, rid)


@router.post("/upgrade-requests/{request_id}/decline")
async def decline(request_id: PathId, rt: RuntimeDep, db: DbDep, admin: AdminDep, rid: RequestIdDep) -> AdminUpgradeRequestPublic:
    return await _decide(rt, db, request_id, False, admin, rid)


# -- audit and catalog ----------------------------------------------------------------------
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
    entries = [AuditEntryPublic.model_validate(entry_public(r)) for r in rows]
    return AuditPagePublic(entries=entries, next_before_id=rows[-1].id if rows and more else None)


@router.post("/catalog/reload")
async def reload_catalog_route(rt: RuntimeDep, admin: AdminDep, rid: RequestIdDep) -> CatalogReloadPublic:
    """Load the tier catalog file again (audited); an invalid file changes nothing and answers 422."""
    result = await reload_catalog(rt, actor=admin.name, request_id=rid)
    return CatalogReloadPublic(source=result.source, tiers=result.tiers, rebuilt_backends=result.rebuilt_backends)
