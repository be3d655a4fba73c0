"""Account rules: create users, change plans, issue tokens, log in, resolve a caller.

Plans come from the catalog; a plan the catalog does not declare is refused.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.accounts.secrets import hash_password, new_token, token_digest, verify_password
from kynsey.catalog import Catalog
from kynsey.errors import Conflict, InvalidRequest, NotAuthenticated, NotFound
from kynsey.storage.models import ApiToken, User, WebSession, as_utc

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_PASSWORD = 8


def check_plan(catalog: Catalog, plan: str) -> str:
    if plan not in catalog.plans:
        raise InvalidRequest(f"unknown plan '{plan}'; the catalog declares: {', '.join(catalog.plans)}", field="plan")
    return plan


async def get_user(db: AsyncSession, name: str) -> User:
    user = await db.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named '{name}'")
    return user


async def list_users(db: AsyncSession) -> list[User]:
    return list(await db.scalars(select(User).order_by(User.name)))


async def create_user(
    db: AsyncSession, catalog: Catalog, name: str, plan: str, *, password: str | None = None, admin: bool = False
) -> User:
    if not NAME_RE.match(name):
        raise InvalidRequest("a user name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", field="name")
    check_plan(catalog, plan)
    if password is not None and len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"a password needs at least {MIN_PASSWORD} characters", field="password")
    user = User(name=name, plan=plan, is_admin=admin, password_hash=hash_password(password) if password else None)
    db.add(user)
    try:
        await db.flush()
    except IntegrityError as exc:
        await db.rollback()
        raise Conflict(f"a user named '{name}' already exists") from exc
    return user


async def issue_token(db: AsyncSession, user: User) -> str:
    token = new_token()
    db.add(ApiToken(user_id=user.id, token_hash=token_digest(token)))
    await db.flush()
    return token


def caller_by_token(token: str):
    """The job (``storage/jobs.py``) that finds who holds API token ``token``; NotAuthenticated if nobody.

    Read on every request, so a revoked token or a changed plan counts at once; the
    User it returns is detached (read it, do not change it through a session)."""
    digest = token_digest(token)

    def job(conn: Connection) -> User:
        row = conn.execute(
            select(*User.__table__.c).join(ApiToken.__table__, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == digest)
        ).mappings().first()
        if row is None:
            raise NotAuthenticated("the API token is not valid")
        return User(**row)

    return job


def caller_by_session(token: str):
    """The job that finds whose browser session ``token`` is: (user, CSRF token); NotAuthenticated if none."""
    digest = token_digest(token)

    def job(conn: Connection) -> tuple[User, str]:
        row = conn.execute(
            select(*User.__table__.c, WebSession.csrf_token, WebSession.expires_at)
            .join(WebSession.__table__, WebSession.user_id == User.id)
            .where(WebSession.id_hash == digest)
        ).mappings().first()
        if row is None or as_utc(row["expires_at"]) < datetime.now(UTC):
            raise NotAuthenticated("your session has expired; log in again", reason="session_expired")
        fields = {k: v for k, v in row.items() if k not in ("csrf_token", "expires_at")}
        return User(**fields), row["csrf_token"]

    return job


async def login(db: AsyncSession, name: str, password: str, ttl: int) -> tuple[str, WebSession, User]:
    user = await db.scalar(select(User).where(User.name == name))
    if not verify_password(user.password_hash if user else None, password) or user is None:
        raise NotAuthenticated("wrong user name or password")
    token = new_token("kys_")
    session = WebSession(
        id_hash=token_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(24),
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
    )
    db.add(session)
    await db.execute(delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at < datetime.now(UTC)))
    return token, session, user


async def logout(db: AsyncSession, token: str) -> None:
    await db.execute(delete(WebSession).where(WebSession.id_hash == token_digest(token)))



async def change_plan(db: AsyncSession, catalog: Catalog, name: str, plan: str, *, actor: str, request_id: str | None = None) -> str:
    """Set ``name``'s plan and audit it; returns the old plan."""
    from kynsey.audit import AuditRecord, append

    check_plan(catalog, plan)
    user = await get_user(db, name)
    old = user.plan
    user.plan = plan
    await append(
        db,
        AuditRecord(actor=actor, action="plan_change", subject=name, result="ok", request_id=request_id, details={"from": old, "to": plan}),
    )
    return old
