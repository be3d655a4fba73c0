"""Log in and out of the web page; who am I; change my password; log out everywhere."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from kynsey.accounts import service as accounts
from kynsey.accounts.lifecycle import change_own_password, log_out_everywhere
from kynsey.accounts.sessions import LoginGuard
from kynsey.runtime import Runtime
from kynsey.storage.models import User
from kynsey.switching.access import current_tier
from kynsey.web.deps import SESSION_COOKIE, DbDep, RequestIdDep, RuntimeDep, UserDep
from kynsey.web.schemas import LoginIn, PasswordChangeIn, RemovedPublic, SessionPublic, UserPublic

router = APIRouter(prefix="/api/auth", tags=["auth"])


async def user_public(rt: Runtime, user: User) -> UserPublic:
    tier = await current_tier(rt.flags, rt.catalog, user)
    return UserPublic(name=user.name, plan=user.plan, is_admin=user.is_admin, active_tier=tier.tier)


def login_guard(rt: Runtime) -> LoginGuard:
    settings = rt.settings
    return LoginGuard(rt.limiter, settings.login_account_limit, settings.login_address_limit, rt.metrics.login)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/login", responses={429: {"description": "too many failed logins for this name or address"}})
async def login(body: LoginIn, request: Request, response: Response, rt: RuntimeDep, db: DbDep, rid: RequestIdDep) -> SessionPublic:
    address = client_address(request)
    token, session, user = await accounts.login(
        db, body.name, body.password, rt.settings.session_ttl, guard=login_guard(rt), address=address, request_id=rid
    )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=rt.settings.session_ttl,
        httponly=True,
        samesite="strict",
        secure=rt.settings.cookie_secure,
        path="/",
    )
    return SessionPublic(user=await user_public(rt, user), csrf_token=session.csrf_token)


@router.post("/logout", status_code=204)
async def logout(request: Request, response: Response, user: UserDep, db: DbDep) -> None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await accounts.logout(db, cookie)
        await db.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.put("/password", responses={403: {"description": "the current password is not right"},
                                     429: {"description": "too many failed logins for this name or address"}})
async def change_password(body: PasswordChangeIn, request: Request, rt: RuntimeDep, db: DbDep, user: UserDep,
                          rid: RequestIdDep) -> RemovedPublic:
    """Change your own password, giving the current one; your other browser sessions end, this one and your
    API tokens stay."""
    removed = await change_own_password(db, user.name, body.current_password, body.password, guard=login_guard(rt),
                                        address=client_address(request), keep_session=request.cookies.get(SESSION_COOKIE),
                                        request_id=rid)
    return RemovedPublic.of(removed)


@router.post("/logout-everywhere")
async def logout_everywhere(response: Response, user: UserDep, db: DbDep, rid: RequestIdDep) -> RemovedPublic:
    """End every browser session of the caller (this one included); API tokens stay."""
    removed = await log_out_everywhere(db, user.name, actor=user.name, request_id=rid)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return RemovedPublic.of(removed)


@router.get("/me")
async def me(request: Request, rt: RuntimeDep, user: UserDep) -> SessionPublic:
    return SessionPublic(user=await user_public(rt, user), csrf_token=getattr(request.state, "csrf_token", None))
