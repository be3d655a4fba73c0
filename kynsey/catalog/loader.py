"""Load and validate a tier catalog from TOML (SPEC F1).

Every problem is a ``CatalogError`` naming the file, the tier and the field,
so a bad catalog stops start-up (or a reload) with a message an operator can act on.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kynsey.catalog.schema import BackendConfig, Catalog, PlanConfig, TierProfile
from kynsey.errors import CatalogError

DEFAULT_CATALOG = "default_tiers.toml"


def load_catalog(path: Path | None) -> Catalog:
    """Read ``path`` (or the built-in default catalog) into a validated Catalog."""
    if path is None:
        text = resources.files("kynsey.catalog").joinpath(DEFAULT_CATALOG).read_text("utf-8")
        return parse_catalog(text, source=f"<built-in {DEFAULT_CATALOG}>")
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(str(path), f"cannot read the file ({exc})") from exc
    return parse_catalog(text, source=str(path))


def parse_catalog(text: str, *, source: str) -> Catalog:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(source, f"not valid TOML: {exc}") from exc
    unknown = set(raw) - {"default_tier", "backends", "plans", "tiers"}
    if unknown:
        raise CatalogError(source, f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    backends = {name: _build(source, BackendConfig, body, f"backends.{name}") for name, body in _table(source, raw, "backends").items()}
    plans = {name: _build(source, PlanConfig, body, f"plans.{name}") for name, body in _table(source, raw, "plans").items()}
    tiers = _tiers(source, raw.get("tiers", []))
    if not tiers:
        raise CatalogError(source, "the catalog declares no tiers", field="tiers")
    default_tier = raw.get("default_tier", next(iter(tiers)))
    if default_tier not in tiers:
        raise CatalogError(source, f"default_tier '{default_tier}' is not a declared tier", field="default_tier")
    _check_references(source, tiers, backends, plans)
    return Catalog(source=source, default_tier=default_tier, backends=backends, plans=plans, tiers=tiers)


def _table(source: str, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise CatalogError(source, f"'{key}' must be a table of tables ([{key}.NAME])", field=key)
    return value


def _build(source: str, model: type[BaseModel], body: Any, where: str, tier: str | None = None):
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or where
        raise CatalogError(source, f"{err['msg']} (in {where})", tier=tier, field=field) from exc


def _tiers(source: str, raw_tiers: Any) -> dict[str, TierProfile]:
    if not isinstance(raw_tiers, list):
        raise CatalogError(source, "tiers must be an array of tables ([[tiers]])", field="tiers")
    tiers: dict[str, TierProfile] = {}
    for index, body in enumerate(raw_tiers):
        name = body.get("tier") if isinstance(body, dict) else None
        label = name if isinstance(name, str) else f"#{index + 1}"
        profile = _build(source, TierProfile, body, f"tiers[{index}]", tier=label)
        if profile.tier in tiers:
            raise CatalogError(source, "duplicate tier: declared twice", tier=profile.tier, field="tier")
        tiers[profile.tier] = profile
    return tiers


def _check_references(source, tiers, backends, plans) -> None:
    entitlements = {grant for plan in plans.values() for grant in plan.grants}
    for slug, tier in tiers.items():
        if tier.backend not in backends:
            raise CatalogError(source, f"unknown backend '{tier.backend}'", tier=slug, field="backend")
        for target in tier.fallback:
            if target not in tiers:
                raise CatalogError(source, f"unknown fallback tier '{target}'", tier=slug, field="fallback")
            if target == slug:
                raise CatalogError(source, "a tier cannot fall back to itself", tier=slug, field="fallback")
        if tier.entitlement not in entitlements:
            raise CatalogError(
                source, f"no plan grants '{tier.entitlement}', so no one could use this tier", tier=slug, field="requires"
            )
    for slug in tiers:
        _check_cycle(source, tiers, slug)


def _check_cycle(source: str, tiers: dict[str, TierProfile], start: str) -> None:
    path, stack = [start], [(start, iter(tiers[start].fallback))]
    while stack:
        _, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            path.pop()
            continue
        if child in path:
            cycle = " -> ".join([*path[path.index(child):], child])
            raise CatalogError(source, f"fallback cycle: {cycle}", tier=start, field="fallback")
        path.append(child)
        stack.append((child, iter(tiers[child].fallback)))
