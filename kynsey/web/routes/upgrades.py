"""A user's upgrade requests (SPEC F19): ask for a plan, see what became of it.

Admins answer them under ``/api/admin/upgrade-requests`` (``routes/admin.py``).
"""

from __future__ import annotations

from fastapi import APIRouter

from kynsey.accounts import upgrades
from kynsey.web.deps import DbDep, RequestIdDep, RuntimeDep, UserDep
from kynsey.web.schemas import UpgradeRequestIn, UpgradeRequestListPublic, UpgradeRequestPublic

router = APIRouter(prefix="/api/upgrade-requests", tags=["upgrades"])


@router.post("", status_code=201, responses={409: {"description": "a request of yours is already pending"}})
async def create(
    body: UpgradeRequestIn, rt: RuntimeDep, db: DbDep, user: UserDep, rid: RequestIdDep
) -> UpgradeRequestPublic:
    request = await upgrades.request_upgrade(db, rt.catalog, user, body.plan, body.note, request_id=rid)
    return UpgradeRequestPublic(**upgrades.request_public(request))


@router.get("")
async def mine(db: DbDep, user: UserDep) -> UpgradeRequestListPublic:
    """The caller's requests, newest first."""
    return UpgradeRequestListPublic(
        requests=[UpgradeRequestPublic(**upgrades.request_public(r)) for r in await upgrades.own_requests(db, user)]
    )
