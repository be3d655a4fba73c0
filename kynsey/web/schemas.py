"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
