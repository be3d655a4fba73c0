"""The one permission check every route that touches a model goes through (SPEC F7, N4)."""

from __future__ import annotations

from kynsey.catalog import Catalog, TierProfile
from kynsey.errors import TierLocked, UnknownTier
from kynsey.rollout.flags import Flags
from kynsey.storage.models import User


def find_tier(catalog: Catalog, slug: str) -> TierProfile:
    tier = catalog.tier(slug)
    if tier is None:
        raise UnknownTier(f"there is no tier '{slug}'; tiers: {', '.join(catalog.tiers)}", tier=slug)
    return tier


def upgrade_prompt(catalog: Catalog, user: User, tier: TierProfile) -> dict:
    plans = catalog.plans_unlocking(tier)
    names = [catalog.plans[p].display_name or p for p in plans]
    return {
        "unlock_plans": plans,
        "message": f"{tier.display_name} is part of the {' or '.join(names)} plan. "
        f"Your plan is {catalog.plans[user.plan].display_name if user.plan in catalog.plans else user.plan}: "
        f"upgrade to use it.",
    }


def require_tier(catalog: Catalog, user: User, slug: str) -> TierProfile:
    """The tier ``slug`` if ``user``'s plan grants it; else UnknownTier or TierLocked."""
    tier = find_tier(catalog, slug)
    if not catalog.plan_allows(user.plan, tier):
        prompt = upgrade_prompt(catalog, user, tier)
        raise TierLocked(prompt["message"], tier=slug, plan=user.plan, unlock_plans=prompt["unlock_plans"])
    return tier


def active_tier(catalog: Catalog, user: User) -> TierProfile:
    """The tier ``user`` chose (the default until they choose, or when their tier left the catalog).

    It is not checked against their plan here: a chosen tier the plan no longer
    grants stays visible as theirs, locked, until they switch (``answering_tier``
    refuses to use it, with the upgrade prompt).
    """
    tier = catalog.tier(user.active_tier) if user.active_tier else None
    return tier or catalog.tiers[catalog.default_tier]


async def current_tier(flags: Flags, catalog: Catalog, user: User) -> TierProfile:
    """The tier that would answer ``user`` now: the default while switching is off for them (SPEC F10)."""
    if await flags.enabled_for(user):
        return active_tier(catalog, user)
    return catalog.tiers[catalog.default_tier]


async def answering_tier(flags: Flags, catalog: Catalog, user: User) -> TierProfile:
    """The tier that answers ``user``'s chat (SPEC F5), from ``catalog`` (the request's
    snapshot): their current tier, which their plan must still grant. A tier they lost
    access to is a TierLocked error with the upgrade prompt, not a silent change of
    model; switching away from it works."""
    tier = await current_tier(flags, catalog, user)
    return require_tier(catalog, user, tier.tier)
