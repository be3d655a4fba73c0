"""Liveness and readiness (SPEC F11)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from kynsey.runtime import Runtime
from kynsey.web.deps import RuntimeDep
from kynsey.web.schemas import HealthPublic, ReadyPublic

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


@router.get("/readyz", response_model=ReadyPublic, responses={503: {"model": ReadyPublic, "description": "not ready"}})
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """Ready when the database answers and a backend is reachable; every check is bounded in time.

    Redis is reported but does not make the instance unready: rate limits fail
    open to this instance's memory while it is down (``kynsey/ratelimit.py``)."""
    checks: dict[str, dict] = {"database": await _database_check(rt)}
    if rt.limiter.shared:
        ok, error = await rt.limiter.check()
        checks["redis"] = {"ok": ok, **({"error": error, "effect": "rate limits count per instance"} if not ok else {})}
    for name, backend in rt.backends.items():
        snap = backend.snapshot
        errors = list(dict.fromkeys(h.error for h in snap.hosts if h.error))
        checks[f"backend:{name}"] = {"ok": snap.reachable, **({"error": "; ".join(errors)} if not snap.reachable else {})}
    ready = checks["database"]["ok"] and any(c["ok"] for k, c in checks.items() if k.startswith("backend:"))
    down = [name for name, check in checks.items() if not check["ok"]]
    body = ReadyPublic(ready=ready, down=down, checks=checks).model_dump()
    return JSONResponse(body, status_code=200 if ready else 503)


async def _database_check(rt: Runtime) -> dict:
    try:
        async with asyncio.timeout(rt.settings.status_timeout):
            async with rt.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {rt.settings.status_timeout:g} s"}
    except (SQLAlchemyError, OSError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return {"ok": True}


@router.get("/metrics")
async def metrics(rt: RuntimeDep) -> Response:
    # Gauges read at scrape time: circuits open and close with the clock, the flag with other instances.
    models = {(t.backend, rt.backends[t.backend].canonical(t.model_id)) for t in rt.catalog.tiers.values()}
    rt.metrics.circuits((b, m, rt.circuits.state(b, m)) for b, m in models | set(rt.circuits.snapshot()))
    rt.metrics.ratelimit_fallback.set(1 if rt.limiter.degraded else 0)
    try:  # a slow database must not stall the scrape: the gauges keep their last values
        await asyncio.wait_for(rt.flags.refresh(), rt.settings.status_timeout)
    except TimeoutError:
        pass
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
