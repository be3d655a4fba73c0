"""The operator's view of the running catalog (``kynsey tiers``, ``GET /api/catalog/status``).

One function builds it for the server's endpoint and for the CLI's own probe,
so both print the same thing. Without ``detail`` it leaves out what only an
admin should see: backend host addresses (hosts are numbered), error texts, model files, and which
users are on which plan.
"""

from __future__ import annotations

from typing import Any

from kynsey.availability.status import STATUS_MEANING
from kynsey.runtime import Runtime
from kynsey.switching.listing import status_report


def overview(rt: Runtime, *, detail: bool, plan_users: dict[str, list[str]] | None = None) -> dict[str, Any]:
    catalog, report = rt.catalog, status_report(rt, admin=detail)
    users = plan_users if detail and plan_users is not None else None
    tiers = []
    for model in report["models"]:
        tier = catalog.tiers[model["tier"]]
        row = {
            "tier": tier.tier,
            "display_name": tier.display_name,
            "internal_name": tier.internal_name,
            "model": model["model"],
            "backend": tier.backend,
            "status": model["status"],
            "meaning": STATUS_MEANING[model["status"]],
            "fallback": list(tier.fallback),
            "plans": catalog.plans_unlocking(tier),
            "size": model["size"],
            "loaded": model["loaded"],
        }
        if detail:
            row.update(reason=model["reason"], file=model["file"])
        tiers.append(row)
    # Every viewer sees which numbered host holds what; the report leaves URLs to admins.
    backends = [{"name": b["name"], "kind": b["kind"], "reachable": b["reachable"], "hosts": b["hosts"]}
                for b in report["backends"]]
    plans = [
        {
            "plan": name,
            "display_name": plan.display_name or name,
            "grants": list(plan.grants),
            **({"users": len(users.get(name, []))} if users is not None else {}),
        }
        for name, plan in catalog.plans.items()
    ]
    result: dict[str, Any] = {
        "source": catalog.source,
        "default_tier": catalog.default_tier,
        "detail": detail,
        "plans": plans,
        "backends": backends,
        "tiers": tiers,
    }
    if users is not None:
        result["users_on_missing_plans"] = {plan: names for plan, names in users.items() if plan not in catalog.plans}
    return result
