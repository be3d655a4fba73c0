"""Account rules: names, passwords and plans; create, find, list users; change a plan.

Plans come from the catalog; a plan the catalog does not declare is refused,
naming the plans it has. Every change is audited here, so the CLI and the
admin API (which both call these functions) keep one set of rules.

The lifecycle (password, disable, delete, admin role, log out everywhere) is in
``kynsey.accounts.lifecycle``; API tokens in ``tokens``; logins and browser
sessions in ``sessions``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.accounts.secrets import hash_password_off_loop
from kynsey.accounts.sessions import caller_by_session, login, logout
from kynsey.accounts.tokens import caller_by_token, issue_token, touch_token
from kynsey.audit import AuditRecord, append
from kynsey.errors import CatalogError, Conflict, InvalidRequest, NotFound
from kynsey.storage.models import User

if TYPE_CHECKING:
    from kynsey.catalog import Catalog  # only for types: the CLI's user commands never load the catalog

__all__ = [
    "caller_by_session",
    "caller_by_token",
    "change_plan",
    "check_catalog_keeps_plans",
    "check_name",
    "check_password",
    "check_plan",
    "create_user",
    "get_user",
    "issue_token",
    "list_users",
    "login",
    "logout",
    "plans_in_use",
    "touch_token",
]

# fullmatch, never match with '$': '$' also matches before a final newline ("mallory\n").
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest(
            "a user name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", field="name"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"a password needs at least {MIN_PASSWORD} characters", field="password")
    if len(password) > MAX_PASSWORD or "\x00" in password:
        raise InvalidRequest(f"a password has at most {MAX_PASSWORD} characters and no NUL", field="password")
    return password


def check_plan(catalog: Catalog, plan: str) -> str:
    if plan not in catalog.plans:
        raise InvalidRequest(f"unknown plan '{plan}'; the catalog declares: {', '.join(catalog.plans)}", field="plan")
    return plan


async def get_user(db: AsyncSession, name: str) -> User:
    # A name no user can have is not looked up (a NUL would even fail on PostgreSQL).
    user = await db.scalar(select(User).where(User.name == name)) if NAME_RE.fullmatch(name) else None
    if user is None:
        raise NotFound(f"no user named '{name}'")
    return user


async def list_users(db: AsyncSession) -> list[User]:
    return list(await db.scalars(select(User).order_by(User.name)))


async def create_user(
    db: AsyncSession,
    catalog: Catalog,
    name: str,
    plan: str,
    *,
    password: str | None = None,
    admin: bool = False,
    actor: str = "system",
    request_id: str | None = None,
) -> User:
    """Create ``name`` on ``plan`` (audited ``user_add``); no password means API tokens only."""
    check_name(name)
    check_plan(catalog, plan)
    password_hash = await hash_password_off_loop(check_password(password)) if password is not None else None
    user = User(name=name, plan=plan, is_admin=admin, password_hash=password_hash)
    db.add(user)
    try:
        await db.flush()
    except IntegrityError as exc:
        await db.rollback()
        raise Conflict(f"a user named '{name}' already exists") from exc
    details = {"plan": plan, "admin": admin, "password": password is not None}
    await append(
        db,
        AuditRecord(actor=actor, action="user_add", subject=name, result="ok", request_id=request_id, details=details),
    )
    return user


async def change_plan(
    db: AsyncSession, catalog: Catalog, name: str, plan: str, *, actor: str, request_id: str | None = None
) -> str:
    """Set ``name``'s plan and audit it; returns the old plan."""
    check_plan(catalog, plan)
    user = await get_user(db, name)
    old = user.plan
    user.plan = plan
    await append(
        db,
        AuditRecord(
            actor=actor,
            action="plan_change",
            subject=name,
            result="ok",
            request_id=request_id,
            details={"from": old, "to": plan},
        ),
    )
    return old


async def plans_in_use(db: AsyncSession) -> dict[str, list[str]]:
    """Each plan some user is on, with those users' names (sorted)."""
    in_use: dict[str, list[str]] = {}
    for plan, name in await db.execute(select(User.plan, User.name).order_by(User.plan, User.name)):
        in_use.setdefault(plan, []).append(name)
    return in_use


async def check_catalog_keeps_plans(db: AsyncSession, catalog: Catalog) -> None:
    """Refuse a catalog that lacks a plan users are on (it would lock them out of every tier).

    Kynsey refuses rather than moving those users to some default plan: which plan
    they should have is the operator's call, and a silent move could take tiers away.
    """
    lost = {plan: names for plan, names in (await plans_in_use(db)).items() if plan not in catalog.plans}
    if not lost:
        return
    users = "; ".join(f"plan '{plan}' has {_some(names)}" for plan, names in lost.items())
    raise CatalogError(
        catalog.source,
        f"it lacks plans users are on ({users}): keep those plans, or first move the users "
        f"to one of {', '.join(catalog.plans)} (kynsey user plan NAME PLAN)",
        field="plans",
    )


def _some(names: list[str], shown: int = 10) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} user(s): {', '.join(names[:shown])}{more}"
