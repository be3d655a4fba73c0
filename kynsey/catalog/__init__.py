"""The tier catalog: what tiers exist, which backend serves each, which plans unlock them."""

from kynsey.catalog.loader import load_catalog, parse_catalog
from kynsey.catalog.schema import BackendConfig, Catalog, PlanConfig, TierProfile

__all__ = ["BackendConfig", "Catalog", "PlanConfig", "TierProfile", "load_catalog", "parse_catalog"]
