"""Switch a user's active tier, following the plan's flowchart (SPEC F4):

feature flag -> unknown tier -> permission -> rate limit -> availability -> warm-up (bounded)
-> store -> audit -> answer. Every attempt, allowed or refused, is audited.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.audit import AuditRecord, append
from kynsey.availability.status import TierStatus
from kynsey.availability.warmup import unload_when_idle
from kynsey.catalog import TierProfile
from kynsey.errors import BackendError, FeatureDisabled, KynseyError, NotAuthenticated, TierUnavailable
from kynsey.ratelimit import RateInfo
from kynsey.runtime import Runtime
from kynsey.storage.models import User
from kynsey.switching.access import active_tier, find_tier, require_tier

UNAVAILABLE_HTTP = {"missing": 409, "unreachable": 503, "degraded": 503}
log = logging.getLogger(__name__)
# The audit result of a refusal, by error code.
REFUSALS = {
    "tier_locked": "denied",
    "rate_limited": "rate_limited",
    "unknown_tier": "unknown_tier",
    "feature_disabled": "feature_disabled",
}


@dataclass(frozen=True, slots=True)
class SwitchResult:
    tier: str
    previous: str
    status: str  # ready | warming | unchanged
    latency_ms: float
    load_ms: float | None = None
    rate: RateInfo | None = None

    @property
    def accepted_only(self) -> bool:
        return self.status == "warming"


async def switch_tier(rt: Runtime, db: AsyncSession, user: User, slug: str, *, request_id: str) -> SwitchResult:
    started = time.perf_counter()
    catalog = rt.catalog
    previous = active_tier(catalog, user).tier
    record: dict[str, Any] = dict(actor=user.name, action="switch", subject=user.name, from_tier=previous, to_tier=slug, request_id=request_id)
    try:
        result = await _switch(rt, db, user, slug, previous, started)
    except KynseyError as exc:
        await db.rollback()
        result_name, latency = _refusal(exc), _ms(started)
        await append(db, AuditRecord(**record, result=result_name, reason=exc.message, latency_ms=latency))
        _observe(rt, record["subject"], result_name, previous, slug if slug in catalog.tiers else "unknown", latency)
        raise
    await append(db, AuditRecord(**record, result=result.status, latency_ms=result.latency_ms, details=_details(result)))
    _observe(rt, record["subject"], result.status, previous, slug, result.latency_ms)
    return result


async def _switch(rt: Runtime, db: AsyncSession, user: User, slug: str, previous: str, started: float) -> SwitchResult:
    await _require_switching(rt, user)
    tier = require_tier(rt.catalog, user, slug)
    if tier.tier == previous:
        return SwitchResult(tier.tier, previous, "unchanged", _ms(started))
    rate = await rt.limiter.hit(rt.settings.switch_rate_limit, "switch", str(user.id))
    await rt.monitor.wait_first()
    status = usable_status(rt, tier)
    loaded, load_ms = True, None
    # A model that failed since its last success is checked (preloaded), not trusted to be 'ready'.
    if status.status != "ready" or rt.circuits.failing(tier.backend, status.model):
        loaded, load_ms = await rt.warmer.warm(tier, rt.settings.switch_warm_wait)
    # Written with the audit entry, in its transaction (the caller's User is a detached copy).
    stored = await db.get(User, user.id)
    if stored is None:  # deleted since this request authenticated
        raise NotAuthenticated("this account no longer exists")
    stored.active_tier = user.active_tier = tier.tier
    load_ms = round(load_ms, 1) if load_ms is not None else None
    return SwitchResult(tier.tier, previous, "ready" if loaded else "warming", _ms(started), load_ms, rate)


def usable_status(rt: Runtime, tier: TierProfile) -> TierStatus:
    """``tier``'s status if a switch (or warm-up) may use it; else TierUnavailable saying why."""
    status = rt.tier_status(tier)
    if not status.usable:
        raise TierUnavailable(
            f"{tier.display_name} is unavailable: {status.reason}",
            status=UNAVAILABLE_HTTP[status.status],
            tier=tier.tier,
            tier_status=status.status,
        )
    return status


async def _require_switching(rt: Runtime, user: User) -> None:
    if not await rt.flags.enabled_for(user):
        raise FeatureDisabled("tier switching is not enabled for your account; the default tier answers")


def _refusal(exc: KynseyError) -> str:
    if isinstance(exc, BackendError):
        return "failed"
    return REFUSALS.get(exc.code, "unavailable" if isinstance(exc, TierUnavailable) else "error")


def _observe(rt: Runtime, user: str, result: str, previous: str, to_tier: str, latency_ms: float) -> None:
    """Metrics, the rollback guard and one log line for every attempt."""
    rt.metrics.switch(result, previous, to_tier, latency_ms / 1000)
    rt.guard.record_switch(result)
    log.info(
        "switch %s -> %s: %s in %.1f ms", previous, to_tier, result, latency_ms,
        extra={"event": "switch", "user": user, "from_tier": previous, "to_tier": to_tier,
               "result": result, "latency_ms": latency_ms},
    )


def _details(result: SwitchResult) -> dict | None:
    return {"load_ms": round(result.load_ms, 1)} if result.load_ms is not None else None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def warm_ahead(rt: Runtime, user: User, slug: str) -> str:
    """Start loading ``slug``'s model before the user switches to it; returns its status."""
    await _require_switching(rt, user)
    tier = require_tier(rt.catalog, user, slug)
    await rt.limiter.hit(rt.settings.warm_rate_limit, "warm", str(user.id))
    status = usable_status(rt, tier)
    if status.status == "cold":
        rt.warmer.start(tier)
        return "warming"
    return status.status


async def unload_tier(rt: Runtime, db: AsyncSession, admin: User, slug: str, *, request_id: str) -> dict:
    """Free ``slug``'s model once no stream uses it (an admin's action, audited)."""
    tier = find_tier(rt.catalog, slug)
    waited = round(await unload_when_idle(rt, tier), 3)
    record = AuditRecord(actor=admin.name, action="unload", result="ok", to_tier=slug, request_id=request_id,
                         details={"waited_s": waited})
    await append(db, record)
    return {"tier": slug, "status": rt.tier_status(tier).status, "waited_s": waited}
