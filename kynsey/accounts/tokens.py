"""API tokens (SPEC F21): named, with a creation and last-use time, an optional expiry; revocable.

A token is shown once and stored as its SHA-256. A request's token is looked up
in the database, or found among the callers this instance keeps for a moment
(``accounts/callers.py``): a revocation, an expiry or a disabled account holds
from the next request on, on the instance that made it, and within
``auth_cache_seconds`` on the others. ``last_used_at``
is written at most once per ``LAST_USED_EVERY`` per token, so busy clients do
not turn every read into a write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.accounts.callers import CHANGES_NO_CALLER
from kynsey.accounts.secrets import new_token, token_digest
from kynsey.audit import AuditRecord, append
from kynsey.errors import InvalidRequest, NotAuthenticated, NotFound
from kynsey.storage.dml import rows_changed
from kynsey.storage.models import ApiToken, User, as_utc, iso_utc, table

LAST_USED_EVERY = timedelta(seconds=60)
MAX_TOKEN_NAME = 64


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What listing a token shows: never the token itself."""

    id: int
    user: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and as_utc(self.expires_at) <= datetime.now(UTC)

    def public(self) -> dict:
        return {
            "id": self.id,
            "user": self.user,
            "name": self.name,
            "created_at": iso_utc(self.created_at),
            "last_used_at": iso_utc(self.last_used_at),
            "expires_at": iso_utc(self.expires_at),
            "expired": self.expired,
        }


def _info(token: ApiToken, user: User) -> TokenInfo:
    return TokenInfo(token.id, user.name, token.name, token.created_at, token.last_used_at, token.expires_at)


async def issue_token(
    db: AsyncSession,
    user: User,
    *,
    name: str = "",
    expires_in: timedelta | None = None,
    actor: str = "system",
    request_id: str | None = None,
) -> str:
    """A new API token for ``user`` (audited ``token_issue``); the only time it is seen in clear."""
    if len(name) > MAX_TOKEN_NAME or "\x00" in name:
        raise InvalidRequest(f"a token name has at most {MAX_TOKEN_NAME} characters", field="name")
    if expires_in is not None and expires_in <= timedelta(0):
        raise InvalidRequest("a token's lifetime must be positive", field="expires")
    token = new_token()
    expires_at = datetime.now(UTC) + expires_in if expires_in is not None else None
    row = ApiToken(user_id=user.id, token_hash=token_digest(token), name=name, expires_at=expires_at)
    db.add(row)
    await db.flush()
    details = {"token_id": row.id, "name": name, "expires_at": iso_utc(expires_at)}
    await append(
        db,
        AuditRecord(
            actor=actor, action="token_issue", subject=user.name, result="ok", request_id=request_id, details=details
        ),
    )
    return token


async def list_tokens(db: AsyncSession, user: User) -> list[TokenInfo]:
    rows = await db.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id))
    return [_info(row, user) for row in rows]


async def count_tokens(db: AsyncSession) -> dict[int, int]:
    """Tokens per user id (the admin page's listing)."""
    rows = await db.execute(select(ApiToken.user_id, func.count()).group_by(ApiToken.user_id))
    return {user_id: count for user_id, count in rows}


async def revoke_token(
    db: AsyncSession, token_id: int, *, actor: str, owner: str | None = None, request_id: str | None = None
) -> TokenInfo:
    """Delete one token (audited ``token_revoke``); ``owner``, when given, must own it."""
    row = (
        await db.execute(select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.id == token_id))
    ).first()
    if row is None or (owner is not None and row[1].name != owner):
        raise NotFound(f"no API token with id {token_id}" + (f" for user '{owner}'" if owner else ""))
    info = _info(*row)
    await db.delete(row[0])
    details = {"token_id": token_id, "name": info.name}
    await append(
        db,
        AuditRecord(
            actor=actor, action="token_revoke", subject=info.user, result="ok", request_id=request_id, details=details
        ),
    )
    return info


async def delete_all_tokens(db: AsyncSession, user: User) -> int:
    """Remove every token of ``user`` (the caller audits and commits)."""
    return await rows_changed(db, delete(ApiToken).where(ApiToken.user_id == user.id))


# Who holds a token, on every API request: built once (building a statement costs more than running it).
TOKEN_HOLDER = (
    select(*User.__table__.c, ApiToken.id.label("token_id"), ApiToken.expires_at.label("token_expires_at"),
           ApiToken.last_used_at.label("token_last_used_at"))
    .join(ApiToken.__table__, ApiToken.user_id == User.id)
    .where(ApiToken.token_hash == bindparam("digest"))
)


def caller_by_token(token: str):
    """The job (``storage/jobs.py``, read-only) that finds who holds API token ``token``:
    (user, the token's id when its last use is due to be written else None, its expiry).

    NotAuthenticated for an unknown or expired token or a disabled account. The User it
    returns is detached: read it, do not change it through a session."""
    digest = token_digest(token)

    def job(conn: Connection) -> tuple[User, int | None, datetime | None]:
        row = conn.execute(TOKEN_HOLDER, {"digest": digest}).mappings().first()
        if row is None:
            raise NotAuthenticated("the API token is not valid")
        now = datetime.now(UTC)
        if row["token_expires_at"] is not None and as_utc(row["token_expires_at"]) <= now:
            raise NotAuthenticated("the API token has expired", reason="token_expired")
        user = User(**{k: v for k, v in row.items() if not k.startswith("token_")})
        if user.disabled_at is not None:
            raise NotAuthenticated("this account is disabled; ask an admin", reason="account_disabled")
        last = row["token_last_used_at"]
        due = last is None or as_utc(last) < now - LAST_USED_EVERY
        return user, row["token_id"] if due else None, row["token_expires_at"]

    return job


def touch_token(token_id: int):
    """The job that records a token's use now (at most once per LAST_USED_EVERY, off the request path)."""

    def job(conn: Connection) -> None:
        conn.execute(update(table(ApiToken)).where(ApiToken.id == token_id).values(last_used_at=datetime.now(UTC))
                     .execution_options(**{CHANGES_NO_CALLER: True}))

    return job
