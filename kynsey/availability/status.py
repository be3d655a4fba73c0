"""Each tier's live status, derived from its backend's last snapshot.

ready: loaded in memory; cold: installed, needs a load; missing: not pulled;
unreachable: backend down; degraded: the model's circuit is open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kynsey.backends.base import Backend, ModelState
from kynsey.catalog import TierProfile

Status = Literal["ready", "cold", "missing", "unreachable", "degraded", "warming"]

STATUS_MEANING = {
    "ready": "loaded in memory: answers at once",
    "cold": "installed: the first request loads it",
    "warming": "loading into memory now",
    "missing": "not installed on its backend",
    "unreachable": "its backend does not answer",
    "degraded": "failing repeatedly: paused for a cooldown",
}


@dataclass(frozen=True, slots=True)
class TierStatus:
    tier: str
    status: Status
    reason: str
    model: str
    state: ModelState | None

    @property
    def usable(self) -> bool:
        return self.status in ("ready", "cold", "warming")


def tier_status(tier: TierProfile, backend: Backend, *, warming: bool, circuit_open: bool) -> TierStatus:
    model = backend.canonical(tier.model_id)
    snapshot = backend.snapshot
    if circuit_open:
        return TierStatus(tier.tier, "degraded", f"{model} failed repeatedly; paused for a cooldown", model, None)
    if not snapshot.reachable:
        errors = "; ".join(dict.fromkeys(h.error for h in snapshot.hosts if h.error)) or "no host answered"
        return TierStatus(tier.tier, "unreachable", f"backend '{backend.name}' is unreachable ({errors})", model, None)
    state = snapshot.model(model)
    if state is None:
        return TierStatus(tier.tier, "missing", f"{model} is not installed on backend '{backend.name}'", model, None)
    if state.loaded:
        return TierStatus(tier.tier, "ready", STATUS_MEANING["ready"], model, state)
    if warming:
        return TierStatus(tier.tier, "warming", STATUS_MEANING["warming"], model, state)
    return TierStatus(tier.tier, "cold", STATUS_MEANING["cold"], model, state)


def host_holdings(backend: Backend, *, admin: bool) -> list[dict[str, Any]]:
    """Each host of ``backend`` as the routing sees it: reachable, the models it holds, streams in
    flight, its breaker and capacity. Hosts are numbered ("host 2"); only admins see their URLs
    (internal addresses), as only they see the errors' hosts."""
    hosts = []
    for i, host in enumerate(backend.snapshot.hosts, 1):
        load = backend.host_load(host.url)
        hosts.append(
            {
                "host": i,
                "label": f"host {i}",
                **({"url": host.url} if admin else {}),
                "reachable": host.reachable,
                "version": host.version,
                "latency_ms": host.latency_ms,
                "error": host.error,
                "loaded": sorted(name for name, state in host.models.items() if state.loaded),
                "streaming": load.streaming,
                "breaker": load.breaker,
                "capacity": load.capacity,
            }
        )
    return hosts
