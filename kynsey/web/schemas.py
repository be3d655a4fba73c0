"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kynsey.storage.text import UNSTORABLE

if TYPE_CHECKING:
    from kynsey.accounts.lifecycle import Removed


def check_text(value: str) -> str:
    """Refused here rather than failing at the database (``storage/text.py``)."""
    if UNSTORABLE.search(value):
        raise ValueError("must not contain NUL characters or unpaired surrogates (not valid Unicode)")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data):
        # One problem for any number of unknown fields: pydantic's one-per-field made a
        # body of 80,000 unknown keys cost half a second of the event loop.
        if isinstance(data, dict) and (unknown := [key for key in data if key not in cls.model_fields]):
            names = ", ".join(repr(name)[:40] for name in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise ValueError(f"unknown fields: {names}{more}")
        return data

    @field_validator("*")
    @classmethod
    def _storable(cls, value):
        if isinstance(value, str):
            return check_text(value)
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str):
                    check_text(item)
        return value


class LoginIn(_Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserPublic(BaseModel):
    name: str
    plan: str
    is_admin: bool
    active_tier: str


class SessionPublic(BaseModel):
    user: UserPublic
    csrf_token: str | None = None


class SwitchIn(_Body):
    tier: str = Field(min_length=1, max_length=64)


class SwitchPublic(BaseModel):
    tier: str
    previous: str
    display_name: str
    model_id: str
    status: str = Field(description="ready | warming | unchanged")
    switch_ms: float
    load_ms: float | None = None


class PlanIn(_Body):
    plan: str = Field(min_length=1, max_length=64)


class AdminUsersPublic(BaseModel):
    users: list[UserPublic]
    plans: list[str] = Field(description="the plans the catalog declares")


class _Out(BaseModel):
    """A response built from a service's dict. A field the service returns and the schema does not
    declare is left out of the answer (never a 500 in production); tests/test_response_schemas.py
    fails the day that happens, so the schema is kept whole."""

    model_config = ConfigDict(extra="ignore")


class AuditEntryPublic(_Out):
    id: int
    at: str | None
    actor: str
    action: str
    subject: str | None
    from_tier: str | None
    to_tier: str | None
    result: str
    reason: str | None
    latency_ms: float | None
    request_id: str | None
    details: dict[str, Any] | None
    prev_hash: str
    hash: str = Field(description="the chain: a hash over this entry and prev_hash (``kynsey audit verify``)")


class AuditPagePublic(BaseModel):
    entries: list[AuditEntryPublic]
    next_before_id: int | None = Field(None, description="pass as before_id for the next, older page; null on the last")


class ConversationIn(_Body):
    title: str | None = Field(None, max_length=200)
    content: str | None = Field(None, description="A first message: the conversation and the message are made "
                                "in one step, and the answer is its reply's event stream.")


class MessageIn(_Body):
    content: str = Field(description="The user's message; not empty, at most KYNSEY_MAX_MESSAGE_CHARS characters.")


class WarmIn(_Body):
    tier: str = Field(min_length=1, max_length=64)


class FlagIn(_Body):
    state: Literal["off", "on", "percentage"] | None = None
    percent: float | None = Field(None, ge=0, le=100, description="Sticky rollout share; implies state 'percentage'.")
    allow: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=1000, description="User names always in (unless the flag is off); replaces the list."
    )


# -- accounts (SPEC F21) and upgrade requests (SPEC F19) ----------------------------------------
class UserCreateIn(_Body):
    name: str = Field(min_length=1, max_length=64)
    plan: str = Field(min_length=1, max_length=64)
    password: str | None = Field(None, max_length=1024, description="At least 8 characters; null: API tokens only.")
    admin: bool = False


class PasswordIn(_Body):
    password: str = Field(min_length=1, max_length=1024)


class PasswordChangeIn(_Body):
    current_password: str = Field(min_length=1, max_length=1024)
    password: str = Field(min_length=1, max_length=1024, description="the new password")


class DisabledIn(_Body):
    disabled: bool


class AdminRoleIn(_Body):
    admin: bool


class LogoutAllIn(_Body):
    tokens: bool = Field(False, description="Also revoke every API token of the user.")


class AdminUserPublic(UserPublic):
    disabled: bool
    created_at: str | None
    tokens: int = Field(description="API tokens the user holds")


class AdminUserListPublic(BaseModel):
    users: list[AdminUserPublic]
    plans: list[str] = Field(description="the plans the catalog declares")


class TokenPublic(BaseModel):
    id: int
    user: str
    name: str
    created_at: str | None
    last_used_at: str | None
    expires_at: str | None
    expired: bool


class TokenListPublic(BaseModel):
    tokens: list[TokenPublic]


class RemovedPublic(BaseModel):
    sessions: int = Field(description="browser sessions ended")
    tokens: int = Field(description="API tokens revoked")
    conversations: int = Field(description="conversations deleted")

    @classmethod
    def of(cls, removed: Removed) -> RemovedPublic:
        return cls(sessions=removed.sessions, tokens=removed.tokens, conversations=removed.conversations)


class UpgradeRequestIn(_Body):
    plan: str = Field(min_length=1, max_length=64)
    note: str | None = Field(None, max_length=500)


class UpgradeRequestPublic(BaseModel):
    id: int
    plan: str
    status: str = Field(description="pending | approved | declined")
    note: str | None
    created_at: str | None
    decided_at: str | None
    decided_by: str | None


class UpgradeRequestListPublic(BaseModel):
    requests: list[UpgradeRequestPublic]


class AdminUpgradeRequestPublic(UpgradeRequestPublic):
    user: str = Field(description="who asked")


class AdminUpgradeRequestListPublic(BaseModel):
    requests: list[AdminUpgradeRequestPublic]


# -- chat controls (SPEC F18) -------------------------------------------------------------------
class RenameIn(_Body):
    title: str = Field(min_length=1, max_length=200)


class RegenerateIn(_Body):
    tier: str | None = Field(None, min_length=1, max_length=64, description="Another tier your plan grants; "
                             "default: your current tier.")


class ShowVersionIn(_Body):
    message_id: str = Field(min_length=1, max_length=64, description="The version (a message id) to show.")


# -- responses built from the services' dicts (the services stay free of FastAPI) ----------------
class ConversationPublic(_Out):
    id: str
    title: str
    created_at: str | None
    updated_at: str | None


class ConversationListItemPublic(ConversationPublic):
    snippet: str | None = Field(None, description="Only when searching with q: the text around the match.")


class ConversationListPublic(_Out):
    conversations: list[ConversationListItemPublic]


class MessagePublic(_Out):
    id: str
    role: str = Field(description="user | assistant")
    content: str
    status: str = Field(description="complete | streaming | stopped | failed | interrupted")
    tier: str | None
    model: str | None
    fallback_from: str | None = Field(description="the tier asked for, when another one answered")
    fallback_reason: str | None
    error: str | None
    ttft_ms: float | None
    tokens: int | None
    tokens_per_s: float | None
    load_ms: float | None
    created_at: str | None


class MessageVersionPublic(MessagePublic):
    parent_id: str | None
    version: int = Field(description="1-based place among its siblings (the versions of this turn)")
    versions: int
    sibling_ids: list[str]


class ConversationViewPublic(ConversationPublic):
    current_leaf_id: str | None
    messages: list[MessageVersionPublic] = Field(description="the path to the current leaf")


class StopPublic(_Out):
    stopped: bool = Field(description="false: the reply had already ended (its status says how)")
    message: MessagePublic


class UpgradePromptPublic(_Out):
    unlock_plans: list[str]
    message: str


class TierPublic(_Out):
    tier: str
    display_name: str
    internal_name: str
    model_id: str
    description: str
    backend: str
    status: str
    status_reason: str
    allowed: bool = Field(description="the caller's plan grants this tier")
    upgrade: UpgradePromptPublic | None
    active: bool


class TierListPublic(_Out):
    active: str
    default: str
    plan: str
    switching_enabled: bool
    tiers: list[TierPublic]


class WarmPublic(_Out):
    tier: str
    status: str


class UnloadPublic(_Out):
    tier: str
    status: str
    waited_s: float


class FlagPublic(_Out):
    name: str
    state: str = Field(description="off | on | percentage")
    percent: float
    allow: list[str]
    enabled: bool
    effective_percent: float
    stored: bool = Field(description="false: no row yet, the default (on for everyone)")
    updated_at: str | None
    updated_by: str | None
    enabled_at: str | None
    rollback_at: str | None
    last_rollback: dict[str, Any] | None
    killed: bool = Field(description="the guard's rollback is newer than the last re-enable")


class GuardStatusPublic(_Out):
    state: str
    switches: dict[str, Any]
    ttft: dict[str, Any]
    last_rollback: dict[str, Any] | None


class DashboardPublic(_Out):
    generated_at: str
    minutes: list[str]
    switches: dict[str, list[int]] = Field(description="result -> count per minute")
    error_rate: list[float | None]
    error_rate_limit: float
    ttft_ms: dict[str, list[float | None]] = Field(description="model -> mean per minute")
    flag: FlagPublic
    last_rollback: dict[str, Any] | None
    killed: bool
    guard: GuardStatusPublic = Field(description="this instance's live window")


class ChainReportPublic(_Out):
    ok: bool
    entries: int
    bad_id: int | None
    problem: str | None = Field(description="altered | removed | rewritten")
    message: str


class CatalogReloadPublic(_Out):
    source: str
    tiers: list[str]
    rebuilt_backends: list[str]


class HealthPublic(_Out):
    status: str


class ReadyPublic(_Out):
    ready: bool
    down: list[str]
    checks: dict[str, dict[str, Any]] = Field(description="database, redis (when shared), backend:NAME")
