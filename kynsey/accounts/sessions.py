"""Logging in to the web page, and the browser sessions it opens.

A login is the one place an anonymous caller makes Kynsey do expensive work
(argon2), so it is guarded (SPEC N3, N4; issue 9):
- the hash is checked in a worker thread, never on the event loop;
- failed logins are limited per account name and per client address through
  the shared RateLimiter (in Redis when configured, so every instance counts
  the same failures); past a limit the attempt is refused with 429 and
  Retry-After *before* its password is checked, right or wrong;
- every checked login, ok or failed, is audited (action ``login``) and counted
  in ``kynsey_logins_total{result}``; refused attempts are counted, not audited,
  so a flood cannot grow the audit log.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.accounts.secrets import new_token, token_digest, verify_password_off_loop
from kynsey.audit import AuditRecord, append
from kynsey.errors import NotAuthenticated, RateLimited
from kynsey.storage.dml import rows_changed
from kynsey.storage.models import User, WebSession, as_utc

if TYPE_CHECKING:
    from kynsey.ratelimit import RateLimiter

WRONG = "wrong user name or password"
DISABLED = "this account is disabled; ask an admin"


@dataclass(frozen=True, slots=True)
class LoginGuard:
    """Failed-login limits (``limits`` notation) and the counter of outcomes."""

    limiter: RateLimiter
    per_account: str
    per_address: str
    count: Callable[[str], None] = lambda result: None

    def _scopes(self, name: str, address: str) -> list[tuple[str, str, str]]:
        return [(self.per_account, "login-account", name), (self.per_address, "login-address", address)]

    async def check(self, name: str, address: str) -> None:
        try:
            for rate, scope, key in self._scopes(name, address):
                await self.limiter.ensure_room(rate, scope, key)
        except RateLimited as exc:
            self.count("rate_limited")
            raise RateLimited(
                f"too many failed logins; try again in {exc.retry_after} s",
                retry_after=exc.retry_after,
                limit=exc.details["limit"],
                headers=exc.headers,
            ) from exc

    async def failed(self, name: str, address: str) -> None:
        self.count("failed")
        for rate, scope, key in self._scopes(name, address):
            try:
                await self.limiter.hit(rate, scope, key)
            except RateLimited:
                pass  # this failure filled the window: the next attempt is refused by check()


async def login(
    db: AsyncSession,
    name: str,
    password: str,
    ttl: int,
    *,
    guard: LoginGuard,
    address: str,
    request_id: str | None = None,
) -> tuple[str, WebSession, User]:
    """Check ``name``/``password`` and open a browser session: (cookie token, session, user)."""
    await guard.check(name, address)
    user = await db.scalar(select(User).where(User.name == name))
    ok = await verify_password_off_loop(user.password_hash if user else None, password)
    reason = WRONG if user is None or not ok else DISABLED if user.disabled_at is not None else None
    audit = AuditRecord(
        actor=name,
        action="login",
        subject=name,
        result="failed" if reason else "ok",
        reason=reason,
        request_id=request_id,
        details={"address": address},
    )
    if user is None or reason is not None:
        await guard.failed(name, address)
        await append(db, audit)
        raise NotAuthenticated(reason or WRONG, **({"reason": "account_disabled"} if reason == DISABLED else {}))
    token = new_token("kys_")
    session = WebSession(
        id_hash=token_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(24),
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
    )
    db.add(session)
    await db.execute(delete(WebSession).where(WebSession.user_id == user.id, WebSession.expires_at < datetime.now(UTC)))
    guard.count("ok")
    await append(db, audit)
    return token, session, user


# Whose browser session it is, on every page request: built once, as ``tokens.TOKEN_HOLDER``.
SESSION_HOLDER = (
    select(*User.__table__.c, WebSession.csrf_token.label("session_csrf"),
           WebSession.expires_at.label("session_expires_at"))
    .join(WebSession.__table__, WebSession.user_id == User.id)
    .where(WebSession.id_hash == bindparam("digest"))
)


def caller_by_session(token: str):
    """The job (read-only) that finds whose browser session ``token`` is: (user, CSRF token, its expiry).

    Kept for a moment by ``accounts/callers.py``; the User it returns is detached."""
    digest = token_digest(token)

    def job(conn: Connection) -> tuple[User, str, datetime]:
        row = conn.execute(SESSION_HOLDER, {"digest": digest}).mappings().first()
        if row is None or as_utc(row["session_expires_at"]) < datetime.now(UTC):
            raise NotAuthenticated("your session has expired; log in again", reason="session_expired")
        user = User(**{k: v for k, v in row.items() if not k.startswith("session_")})
        if user.disabled_at is not None:
            raise NotAuthenticated(DISABLED, reason="account_disabled")
        return user, row["session_csrf"], row["session_expires_at"]

    return job


async def logout(db: AsyncSession, token: str) -> None:
    await db.execute(delete(WebSession).where(WebSession.id_hash == token_digest(token)))


async def end_sessions(db: AsyncSession, user: User, *, keep: str | None = None) -> int:
    """Remove every browser session of ``user`` but the one whose cookie is ``keep`` (the caller audits and
    commits)."""
    stmt = delete(WebSession).where(WebSession.user_id == user.id)
    if keep is not None:
        stmt = stmt.where(WebSession.id_hash != token_digest(keep))
    return await rows_changed(db, stmt)
