"""Kynsey's one settings object.

Every setting is declared once here, with its default and help text, read from
``KYNSEY_*`` environment variables (``OLLAMA_HOST`` keeps Ollama's own name).
The object is built once at start-up and never mutated; ``kynsey settings``
prints every field.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from kynsey.storage.db import DbLimits

RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$")


def _rate(value: str) -> str:
    if not RATE_RE.match(value):
        raise ValueError(f"{value!r} is not a rate like '10/minute' (N/second|minute|hour|day)")
    return value.strip()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KYNSEY_", frozen=True, extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Folder for the SQLite database and other local state.")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; default: sqlite+aiosqlite:///<data_dir>/kynsey.db."
    )
    redis_url: str | None = Field(
        None, description="Redis URL that instances share rate limits, circuits, warm-ups, the rollback guard's windows "
        "and live replies through; unset: each instance keeps them in memory."
    )
    redis_prefix: str = Field("kynsey", description="Prefix of every Redis key Kynsey writes.")
    tiers: Path | None = Field(None, description="Tier catalog TOML file; unset: the built-in default catalog.")
    ollama_host: str = Field(
        "http://127.0.0.1:11434",
        validation_alias=AliasChoices("OLLAMA_HOST", "KYNSEY_OLLAMA_HOST"),
        description="Default Ollama server, as Ollama's own tools read it.",
    )
    switch_rate_limit: str = Field("10/minute", description="Tier switches allowed per user.")
    chat_rate_limit: str = Field("30/minute", description="Chat requests allowed per user and tier.")
    warm_rate_limit: str = Field("30/minute", description="Warm-ahead requests allowed per user.")
    switch_warm_wait: float = Field(
        2.0, description="Seconds a switch waits for a cold model to load before answering 202 'warming'."
    )
    status_refresh: float = Field(5.0, description="Seconds between background refreshes of backend status.")
    status_timeout: float = Field(
        1.0, description="Seconds a status probe (and a page waiting for the first one) may take."
    )
    connect_timeout: float = Field(2.0, description="Seconds to connect to a backend.")
    read_timeout: float = Field(300.0, description="Seconds to wait for the next bytes of a backend reply.")
    load_timeout: float = Field(300.0, description="Seconds a model load may take before it counts as failed.")
    circuit_failures: int = Field(3, ge=1, description="Consecutive failures that open a model's circuit.")
    circuit_cooldown: float = Field(30.0, gt=0, description="Seconds an open circuit waits before one probe.")
    max_message_chars: int = Field(32_000, ge=1, description="Longest chat message accepted, in characters.")
    chat_flush_seconds: float = Field(0.25, gt=0, description="How often a streaming reply is saved.")
    stream_stale_seconds: float = Field(
        30.0, gt=0, description="A 'streaming' reply untouched this long lost its writer and is marked interrupted."
    )
    session_ttl: int = Field(7 * 24 * 3600, description="Seconds a browser session lasts.")
    cookie_secure: bool = Field(
        False, description="Mark the session cookie Secure (set true behind HTTPS)."
    )
    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")
    flag_cache_seconds: float = Field(
        2.0, ge=0, description="Seconds an instance caches the feature flags; other instances' changes show within it."
    )
    auth_cache_seconds: float = Field(
        1.0, ge=0, description="Seconds an instance keeps a caller (token or session) it found; changes made on "
        "another instance or by the CLI show within it, changes made on this one at once (0: look up every request)."
    )
    guard_window_seconds: float = Field(
        300.0, gt=0, description="Rollback guard: the sliding window (seconds) over which switches and replies are judged."
    )
    guard_min_switches: int = Field(
        50, ge=1, description="Rollback guard: switch attempts needed in the window before the error rate counts."
    )
    guard_max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Rollback guard: switch error rate (failed/unavailable over attempts) that trips it."
    )
    guard_ttft_degradation: float = Field(
        0.20, gt=0, description="Rollback guard: median time-to-first-token rise over the baseline that trips it (0.2 = 20%)."
    )
    guard_min_replies: int = Field(
        20, ge=1, description="Rollback guard: replies needed in the window before the latency check counts."
    )
    guard_baseline_replies: int = Field(
        50, ge=1, description="Rollback guard: replies after start (or re-enable) whose median is the latency baseline."
    )
    guard_sustain_seconds: float = Field(
        60.0, ge=0, description="Rollback guard: a breach must hold this long (re-checked on every sample) before it trips."
    )
    db_connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to PostgreSQL before it counts as down.")
    db_statement_timeout: float = Field(
        15.0, gt=0, description="Seconds a PostgreSQL statement may run (server- and client-side) before it counts as down."
    )
    db_pool_size: int = Field(
        40, ge=1, description="PostgreSQL connections each instance may open and keeps open once opened.")
    db_max_overflow: int = Field(
        0, ge=0, description="PostgreSQL connections an instance may open beyond the pool, each closed once used.")
    db_pool_timeout: float = Field(
        10.0, gt=0, description="Seconds a request waits for a free PostgreSQL connection before a 503."
    )
    redis_timeout: float = Field(
        0.25, gt=0, description="Seconds a Redis call may take; past it (or on an error) limits fall back to this instance's memory."
    )
    redis_retry_seconds: float = Field(
        2.0, gt=0, description="Seconds rate limits stay on the in-memory fallback before Redis is tried again."
    )
    shutdown_grace: float = Field(
        10.0, ge=0, description="Seconds a shutdown lets running replies finish before they are saved 'interrupted'."
    )
    login_account_limit: str = Field(
        "5/minute", description="Failed logins allowed per account name; past it, logins to it answer 429."
    )
    login_address_limit: str = Field(
        "20/minute", description="Failed logins allowed per client address; past it, its logins answer 429."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="Log lines: 'text' (readable), 'json' (one object a line), 'auto' (text on a terminal, else JSON)."
    )
    url: str = Field(
        "http://127.0.0.1:8000", description="The running Kynsey that `kynsey tiers` asks (its --url overrides it)."
    )
    api_token: str | None = Field(
        None, description="API token `kynsey tiers` sends to --url; an admin's adds backend hosts and reasons."
    )

    @field_validator("login_account_limit", "login_address_limit")
    @classmethod
    def _check_login_rate(cls, value: str) -> str:
        return _rate(value)
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted, in bytes; a larger one gets 413 before it is "
        "read. At least 12 x KYNSEY_MAX_MESSAGE_CHARS (JSON may spell a character in 12 bytes)."
    )
    workers: int = Field(
        1, ge=1, description="Processes `kynsey serve` runs on one socket (its --workers); more than 1 needs PostgreSQL, "
        "KYNSEY_REDIS_URL and no `local` tiers (docs/deploy.md)."
    )
    compat_store: bool = Field(
        False, description="Also store the OpenAI- and Ollama-compatible APIs' chats as conversations the user sees on the page."
    )

    @field_validator("switch_rate_limit", "chat_rate_limit", "warm_rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        return _rate(value)

    @field_validator("max_body_bytes")
    @classmethod
    def _room_for_a_message(cls, value: int, info: ValidationInfo) -> int:
        chars = info.data.get("max_message_chars", 0)
        if value < 12 * chars:
            raise ValueError(f"{value} bytes cannot hold a message of {chars} characters; use at least {12 * chars}")
        return value

    @field_validator("ollama_host")
    @classmethod
    def _normalise_host(cls, value: str) -> str:
        return normalise_ollama_host(value)

    @property
    def db_limits(self) -> DbLimits:
        from kynsey.storage.db import DbLimits

        return DbLimits(self.db_connect_timeout, self.db_statement_timeout, self.db_pool_size,
                        self.db_max_overflow, self.db_pool_timeout)

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'kynsey.db').resolve()}"

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, help) for every setting."""
        rows = []
        for name, field in cls.model_fields.items():
            env = "OLLAMA_HOST" if name == "ollama_host" else f"KYNSEY_{name.upper()}"
            default = str(field.default) if isinstance(field.default, Path) else repr(field.default)
            rows.append((env, default, field.description or ""))
        return rows


def normalise_ollama_host(value: str) -> str:
    """Read a host the way Ollama's tools do: scheme and port are optional."""
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
    scheme, rest = value.split("://", 1)
    if ":" not in rest.split("/", 1)[0]:
        host, _, path = rest.partition("/")
        rest = f"{host}:11434" + (f"/{path}" if path else "")
    return f"{scheme}://{rest}"
