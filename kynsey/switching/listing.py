"""What the tier and status endpoints answer (SPEC F3, F4)."""

from __future__ import annotations

import time
from typing import Any

from kynsey.availability.status import STATUS_MEANING, host_holdings
from kynsey.runtime import Runtime
from kynsey.storage.models import User
from kynsey.switching.access import active_tier, upgrade_prompt


def list_tiers(rt: Runtime, user: User, *, switching: bool) -> dict[str, Any]:
    """``switching``: is the feature flag on for ``user``? Off: the default tier answers (SPEC F10)."""
    catalog = rt.catalog
    active = active_tier(catalog, user).tier if switching else catalog.default_tier
    tiers = []
    for tier in catalog.tiers.values():
        status = rt.tier_status(tier)
        allowed = catalog.plan_allows(user.plan, tier)
        tiers.append(
            {
                "tier": tier.tier,
                "display_name": tier.display_name,
                "internal_name": tier.internal_name,
                "model_id": tier.model_id,
                "description": tier.description,
                "backend": tier.backend,
                "status": status.status,
                "status_reason": status.reason,
                "allowed": allowed,
                "upgrade": None if allowed else upgrade_prompt(catalog, user, tier),
                "active": tier.tier == active,
            }
        )
    return {
        "active": active,
        "default": catalog.default_tier,
        "plan": user.plan,
        "switching_enabled": switching,
        "tiers": tiers,
    }


def status_report(rt: Runtime, *, admin: bool) -> dict[str, Any]:
    """Backend and model health; host URLs only for admins (they are internal addresses)."""
    now = time.monotonic()
    backends = []
    for backend in rt.backends.values():
        snap = backend.snapshot
        backends.append(
            {
                "name": backend.name,
                "kind": backend.kind,
                "reachable": snap.reachable,
                "checked_s_ago": round(now - snap.checked_at, 1),
                "hosts": host_holdings(backend, admin=admin),
            }
        )
    models = []
    for tier in rt.catalog.tiers.values():
        status = rt.tier_status(tier)
        state = status.state
        models.append(
            {
                "tier": tier.tier,
                "backend": tier.backend,
                "model": status.model,
                "status": status.status,
                "meaning": STATUS_MEANING[status.status],
                "reason": status.reason,
                "installed": state is not None and state.installed,
                "loaded": state is not None and state.loaded,
                "size": state.size if state else None,
                "file": state.details.get("path") if state else None,
                "expires_at": state.expires_at if state else None,
                "circuit": rt.circuits.state(tier.backend, status.model),
            }
        )
    return {"backends": backends, "models": models}
