"""Operators' API: the feature flag, audit export and verify, the dashboard (SPEC F9-F12).

Every route takes ``AdminDep`` (cookie sessions need the CSRF token for PUT).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from kynsey.audit.export import FORMATS, export_chunks
from kynsey.audit.query import AuditFilter
from kynsey.audit.verify import verify_chain
from kynsey.rollout.dashboard import dashboard
from kynsey.rollout.flags import check_name
from kynsey.runtime import Runtime
from kynsey.web.deps import AdminDep, DbDep, FilterText, RequestIdDep, RuntimeDep, UtcMoment
from kynsey.web.schemas import ChainReportPublic, DashboardPublic, FlagIn, FlagPublic

router = APIRouter(prefix="/api/admin", tags=["operations"])


@router.get("/flags/{name}")
async def get_flag(name: str, rt: RuntimeDep, admin: AdminDep) -> FlagPublic:
    return FlagPublic.model_validate((await rt.flags.reload(check_name(name))).public())


@router.put("/flags/{name}")
async def put_flag(name: str, body: FlagIn, rt: RuntimeDep, admin: AdminDep, rid: RequestIdDep) -> FlagPublic:
    flag = await rt.flags.set(
        name, actor=admin.name, state=body.state, percent=body.percent, allow=body.allow, request_id=rid
    )
    return FlagPublic.model_validate(flag.public())


async def _export(rt: Runtime, where: AuditFilter, fmt: str) -> AsyncIterator[str]:
    # Its own session: the response streams after the request's dependencies have closed.
    async with rt.sessions() as db:
        async for chunk in export_chunks(db, where, fmt):
            yield chunk


@router.get("/audit/export")
async def export_audit(
    rt: RuntimeDep,
    admin: AdminDep,
    format: Literal["jsonl", "csv"] = "jsonl",
    user: FilterText = None,
    tier: FilterText = None,
    result: FilterText = None,
    action: FilterText = None,
    since: UtcMoment = None,
    until: UtcMoment = None,
) -> StreamingResponse:
    where = AuditFilter(user=user or None, tier=tier or None, result=result or None, action=action or None,
                        since=since, until=until)
    headers = {"Content-Disposition": f'attachment; filename="kynsey-audit.{format}"'}
    return StreamingResponse(_export(rt, where, format), media_type=FORMATS[format], headers=headers)


@router.get("/audit/verify")
async def verify_audit(db: DbDep, admin: AdminDep) -> ChainReportPublic:
    return ChainReportPublic.model_validate((await verify_chain(db)).public())


@router.get("/dashboard")
async def get_dashboard(rt: RuntimeDep, db: DbDep, admin: AdminDep) -> DashboardPublic:
    return DashboardPublic.model_validate(await dashboard(rt, db))
