"""Liveness and readiness (SPEC F11)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from kynsey.web.deps import RuntimeDep

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(rt: RuntimeDep) -> JSONResponse:
    checks: dict[str, dict] = {}
    try:
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except (SQLAlchemyError, OSError) as exc:
        checks["database"] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    for name, backend in rt.backends.items():
        snap = backend.snapshot
        errors = [h.error for h in snap.hosts if h.error]
        checks[f"backend:{name}"] = {"ok": snap.reachable, **({"error": "; ".join(errors)} if not snap.reachable else {})}
    ready = checks["database"]["ok"] and any(c["ok"] for k, c in checks.items() if k.startswith("backend:"))
    down = [name for name, check in checks.items() if not check["ok"]]
    return JSONResponse({"ready": ready, "down": down, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(rt: RuntimeDep) -> Response:
    # Gauges read at scrape time: circuits open and close with the clock, the flag with other instances.
    models = {(t.backend, rt.backends[t.backend].canonical(t.model_id)) for t in rt.catalog.tiers.values()}
    rt.metrics.circuits((b, m, rt.circuits.state(b, m)) for b, m in models | set(rt.circuits.snapshot()))
    await rt.flags.refresh()
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
