"""The tier catalog's shape: backends, plans and tier profiles (SPEC F1)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

SLUG = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
BackendKind = Literal["ollama", "openai", "local"]
# The options a client of the compatible APIs may set per request (Ollama's names), unless the tier pins them.
ClientOption = Literal["temperature", "top_p", "top_k", "seed", "stop", "num_predict", "presence_penalty",
                       "frequency_penalty"]
INT32 = 2**31 - 1  # the largest count or top_k: model servers read them as 32-bit


class ClientOptions(BaseModel):
    """``ClientOption``'s values, typed and bounded: a value a backend cannot take failed there, and
    three such requests opened the model's circuit for everyone. Other keys are ignored here: runner
    options (num_ctx, ...) are the tier's."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, ge=0, allow_inf_nan=False)
    top_p: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=0, le=INT32)
    seed: int | None = Field(None, ge=-1, le=2**32 - 1)
    stop: str | list[str] | None = Field(None, max_length=16)
    num_predict: int | None = Field(None, ge=-2, le=INT32)  # -1: no limit, -2: fill the context
    presence_penalty: float | None = Field(None, allow_inf_nan=False)
    frequency_penalty: float | None = Field(None, allow_inf_nan=False)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        return [value] if isinstance(value, str) else value


class _TierOptions(ClientOptions):
    """A tier's options: the same, and its context; other runner options are the backend's to judge."""

    num_ctx: int | None = Field(None, ge=128, le=INT32)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendConfig(_Strict):
    kind: BackendKind = "ollama"
    hosts: list[str] = Field(default_factory=list, description="Base URLs; empty for ollama means OLLAMA_HOST.")
    api_key: str | None = None
    model_dirs: list[str] = Field(default_factory=list, description="local: folders searched for GGUF files.")
    max_loaded: int = Field(
        2, ge=1,
        description="local: models kept in memory at once. ollama/openai: models each host holds at once "
        "(OLLAMA_MAX_LOADED_MODELS); unset, Kynsey learns it from the first eviction it sees on a host.",
    )
    routing: Literal["holder", "health_order"] = Field(
        "holder",
        description="ollama/openai with several hosts: 'holder' sends a model to a host that holds it, else the "
        "least busy host with room; 'health_order' to where it is loaded, else installed, else the first "
        "healthy host (the routing before issue 12).",
    )
    max_queue: int = Field(4, ge=0, description="local: generations waiting per model before 'busy'.")
    n_ctx: int = Field(2048, ge=128, description="local: default context length.")

    @property
    def host_max_loaded(self) -> int | None:
        """Each host's capacity when the catalog sets ``max_loaded``, else None (learned)."""
        return self.max_loaded if "max_loaded" in self.model_fields_set else None


class PlanConfig(_Strict):
    display_name: str = ""
    grants: list[str] = Field(default_factory=list, description="Entitlements this plan grants.")


class TierProfile(_Strict):
    tier: str
    display_name: str
    internal_name: str
    model_id: str
    description: str = ""
    backend: str = "ollama"
    options: dict[str, Any] = Field(default_factory=dict)
    keep_alive: str | int = "30m"
    keep_warm: bool = False
    fallback: list[str] = Field(default_factory=list)
    requires: str | None = Field(None, description="Entitlement that unlocks the tier; default: its slug.")
    pinned: list[ClientOption] = Field(
        default_factory=list, description="Options clients of the compatible APIs may not set: the tier's value (or none) holds."
    )

    @field_validator("tier")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("must be a lowercase slug (letters, digits, '-' or '_', at most 32)")
        return value

    @field_validator("options")
    @classmethod
    def _typed_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:  # checked, not converted: the options go to the backend as written
            _TierOptions.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise PydanticCustomError("tier_option", "{where}: {problem}", {"where": where, "problem": err["msg"]}) from None
        return value

    @field_validator("model_id", "display_name", "internal_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def entitlement(self) -> str:
        return self.requires or self.tier


class Catalog(_Strict):
    source: str = "<built-in>"
    default_tier: str
    backends: dict[str, BackendConfig]
    plans: dict[str, PlanConfig]
    tiers: dict[str, TierProfile]

    def tier(self, slug: str) -> TierProfile | None:
        return self.tiers.get(slug)

    def plan_allows(self, plan: str, tier: TierProfile) -> bool:
        granted = self.plans.get(plan)
        return granted is not None and tier.entitlement in granted.grants

    def plans_unlocking(self, tier: TierProfile) -> list[str]:
        return [name for name, plan in self.plans.items() if tier.entitlement in plan.grants]

    def local_tiers(self) -> list[str]:
        """Tiers whose model runs inside the Kynsey process (llama.cpp): each process loads its own copy."""
        return [slug for slug, tier in self.tiers.items() if self.backends[tier.backend].kind == "local"]
