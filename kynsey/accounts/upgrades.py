"""Upgrade requests (SPEC F19): the upgrade prompt as an offer a user can accept.

A user asks for a plan the catalog has and they do not; at most one request
of theirs is pending at a time (a partial unique index holds this even for
two requests sent at once). An admin approves (the user's plan changes, in
the same transaction as its audit entry) or declines. Each step is
audited: ``upgrade_request``, ``upgrade_approve``, ``upgrade_decline``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.accounts.service import check_plan
from kynsey.audit import AuditRecord, append
from kynsey.errors import Conflict, InvalidRequest, NotFound
from kynsey.storage.models import UpgradeRequest, User, iso_utc

if TYPE_CHECKING:
    from kynsey.catalog import Catalog  # types only: listing users must not load the catalog

STATUSES = ("pending", "approved", "declined")
MAX_NOTE = 500


def request_public(request: UpgradeRequest, user: str | None = None) -> dict:
    body = {
        "id": request.id,
        "plan": request.plan,
        "status": request.status,
        "note": request.note,
        "created_at": iso_utc(request.created_at),
        "decided_at": iso_utc(request.decided_at),
        "decided_by": request.decided_by,
    }
    return body if user is None else {**body, "user": user}


async def request_upgrade(
    db: AsyncSession, catalog: Catalog, user: User, plan: str, note: str | None, *, request_id: str | None = None
) -> UpgradeRequest:
    check_plan(catalog, plan)
    if plan == user.plan:
        raise InvalidRequest(f"you are already on the {plan} plan", field="plan")
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidRequest(f"a note has at most {MAX_NOTE} characters", field="note")
    request = UpgradeRequest(user_id=user.id, plan=plan, note=note or None, status="pending")
    db.add(request)
    try:
        await db.flush()
    except IntegrityError as exc:
        await db.rollback()
        raise Conflict("you already have a pending upgrade request; an admin will answer it") from exc
    details = {"request": request.id, "from": user.plan, "to": plan}
    await append(
        db,
        AuditRecord(
            actor=user.name,
            action="upgrade_request",
            subject=user.name,
            result="pending",
            request_id=request_id,
            details=details,
        ),
    )
    return request


async def own_requests(db: AsyncSession, user: User) -> list[UpgradeRequest]:
    stmt = select(UpgradeRequest).where(UpgradeRequest.user_id == user.id).order_by(UpgradeRequest.id.desc())
    return list(await db.scalars(stmt))


async def all_requests(
    db: AsyncSession, status: str | None = None, limit: int = 200
) -> list[tuple[UpgradeRequest, str]]:
    """Requests with their user's name, newest first; ``status`` filters."""
    stmt = select(UpgradeRequest, User.name).join(User, User.id == UpgradeRequest.user_id)
    if status is not None:
        stmt = stmt.where(UpgradeRequest.status == status)
    rows = await db.execute(stmt.order_by(UpgradeRequest.id.desc()).limit(limit))
    return [(request, name) for request, name in rows]


async def _pending(db: AsyncSession, request_id: int) -> tuple[UpgradeRequest, User]:
    row = (
        await db.execute(
            select(UpgradeRequest, User)
            .join(User, User.id == UpgradeRequest.user_id)
            .where(UpgradeRequest.id == request_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no upgrade request with id {request_id}")
    if row[0].status != "pending":
        raise Conflict(f"upgrade request {request_id} was already {row[0].status}")
    return row[0], row[1]


async def decide(
    db: AsyncSession, catalog: Catalog, request_id: int, *, approve: bool, actor: str, audit_id: str | None = None
) -> tuple[UpgradeRequest, str]:
    """Approve or decline a pending request. Approving is the plan change itself: the
    decision, the new plan and its ``upgrade_approve`` entry commit in one transaction."""
    request, user = await _pending(db, request_id)
    old_plan = user.plan
    if approve:
        user.plan = check_plan(catalog, request.plan)
    request.status = "approved" if approve else "declined"
    request.decided_at, request.decided_by = datetime.now(UTC), actor
    details = {"request": request.id, "from": old_plan, "to": request.plan}
    action = "upgrade_approve" if approve else "upgrade_decline"
    await append(
        db,
        AuditRecord(
            actor=actor, action=action, subject=user.name, result=request.status, request_id=audit_id, details=details
        ),
    )
    return request, user.name
