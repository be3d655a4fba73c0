"""Log in and out of the web page; who am I."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from kynsey.accounts import service as accounts
from kynsey.switching.access import current_tier
from kynsey.web.deps import SESSION_COOKIE, DbDep, RuntimeDep, UserDep
from kynsey.web.schemas import LoginIn, SessionPublic, UserPublic

router = APIRouter(prefix="/api/auth", tags=["auth"])


async def user_public(rt, user) -> UserPublic:
    tier = await current_tier(rt, user)
    return UserPublic(name=user.name, plan=user.plan, is_admin=user.is_admin, active_tier=tier.tier)


@router.post("/login")
async def login(body: LoginIn, response: Response, rt: RuntimeDep, db: DbDep) -> SessionPublic:
    token, session, user = await accounts.login(db, body.name, body.password, rt.settings.session_ttl)
    await db.commit()
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


@router.get("/me")
async def me(request: Request, rt: RuntimeDep, user: UserDep) -> SessionPublic:
    return SessionPublic(user=await user_public(rt, user), csrf_token=getattr(request.state, "csrf_token", None))
