"""Typed dependencies routes declare: the runtime, a database session, the caller."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import AfterValidator
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.accounts.callers import copy_user
from kynsey.accounts.secrets import token_digest
from kynsey.accounts.service import caller_by_session, caller_by_token, touch_token
from kynsey.errors import CsrfFailed, NotAuthenticated, PermissionDenied
from kynsey.runtime import Runtime
from kynsey.storage.jobs import Job
from kynsey.storage.models import User, as_utc

log = logging.getLogger(__name__)
SESSION_COOKIE = "kynsey_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_runtime(request: Request) -> Runtime:  # async: a plain def would run in a thread pool
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_db(rt: RuntimeDep) -> AsyncIterator[AsyncSession]:
    session = rt.sessions()
    try:
        yield session
    finally:
        try:  # after the answer went out: a database that died meanwhile must not break the connection
            await session.close()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("could not close a database session: %s", str(exc).splitlines()[0] if str(exc) else exc)


DbDep = Annotated[AsyncSession, Depends(get_db)]


async def request_id(request: Request) -> str:
    return request.scope.get("request_id", "-")


RequestIdDep = Annotated[str, Depends(request_id)]


async def current_user(request: Request, rt: RuntimeDep) -> User:
    """A bearer token for API clients; a session cookie (with CSRF for writes) for the page.

    Looked up in the database, or among the callers kept for a moment (``accounts/callers.py``): a
    revoked token or a changed plan counts at once on this instance, within ``auth_cache_seconds`` on others."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("the Authorization header must be 'Bearer <token>'")
        (user, touch, _), looked_up = await _caller(rt, "token", token.strip(), caller_by_token)
        if looked_up and touch is not None:  # its last use, written once a minute at most, after this reply
            rt.spawn(rt.jobs.write(touch_token(touch)), "record a token's last use")
        return copy_user(user)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        (user, csrf_token, _), _ = await _caller(rt, "session", cookie, caller_by_session)
        if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != csrf_token:
            raise CsrfFailed("this request lacks the page's CSRF token; reload the page")
        request.state.csrf_token = csrf_token
        return copy_user(user)
    raise NotAuthenticated("log in, or send 'Authorization: Bearer <token>'")


async def _caller(rt: Runtime, kind: str, secret: str, job: Callable[[str], Job[tuple]]) -> tuple[tuple, bool]:
    """The lookup ``job(secret)`` answers (user, detail, expiry), kept by its digest for a moment."""
    return await rt.callers.find(f"{kind} {token_digest(secret)}", lambda: rt.jobs.read(job(secret)),
                                 until=lambda found: found[2])


UserDep = Annotated[User, Depends(current_user)]


async def current_admin(user: UserDep) -> User:
    if not user.is_admin:
        raise PermissionDenied("this needs an admin account")
    return user


AdminDep = Annotated[User, Depends(current_admin)]


# A text filter in a query string: short, and without NUL (PostgreSQL cannot compare text with NUL).
FilterText = Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00]*$")]

# A row id in a query string: the id columns are 32-bit on PostgreSQL (and 64-bit on SQLite).
RowId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


def _in_utc(moment: datetime | None) -> datetime | None:
    try:
        return as_utc(moment)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 once in UTC
        raise ValueError("is out of range once converted to UTC") from None


# A moment in a query string (ISO 8601; without a zone it means UTC), handed on in UTC.
UtcMoment = Annotated[datetime | None, Query(), AfterValidator(_in_utc)]
