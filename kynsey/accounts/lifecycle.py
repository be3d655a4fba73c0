"""An account from creation to removal (SPEC F21): password, disable/enable, admin role,
log out everywhere, delete. The CLI and the admin API call these same functions; a user
changes their own password with ``change_own_password``.

Each change is audited and committed at once. It holds from the next request
on, on the instance that made it, and within ``KYNSEY_AUTH_CACHE_SECONDS`` on
the others, which keep a caller they looked up that long (``callers.py``).

Rules:
- Setting a password ends the user's browser sessions (tokens stay). Users changing their
  own give the current one, checked and limited as a login is; the session they change it
  from stays.
- Disabling ends their browser sessions and refuses their tokens until they
  are enabled again (the tokens are kept, not deleted).
- Deleting removes the user with their conversations and messages, tokens,
  sessions and upgrade requests (the foreign keys cascade); the audit log
  keeps its entries, which name the user. A reply being written at that moment
  is discarded.
- The last enabled admin cannot be disabled, demoted or deleted: someone must
  be left who can use the admin page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.accounts.secrets import hash_password_off_loop, verify_password_off_loop
from kynsey.accounts.service import check_password, get_user
from kynsey.accounts.sessions import LoginGuard, end_sessions
from kynsey.accounts.tokens import delete_all_tokens
from kynsey.audit import AuditRecord, append
from kynsey.errors import Conflict, PermissionDenied
from kynsey.storage.models import Conversation, User, utcnow

Check = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Removed:
    """What a delete or a "log out everywhere" took away."""

    sessions: int = 0
    tokens: int = 0
    conversations: int = 0


async def _audit(db: AsyncSession, action: str, user: User, actor: str, request_id: str | None, *,
                 check: Check | None = None, **details) -> None:
    record = AuditRecord(actor=actor, action=action, subject=user.name, result="ok", request_id=request_id,
                         details=details or None)
    await append(db, record, check=check)


def _keep_an_admin(db: AsyncSession, user: User, doing: str) -> Check | None:
    """For a change that takes ``user``'s admin role away (None if they have none to lose): the check that an
    enabled admin is left. It runs as the change is audited, the change flushed, where audited changes are
    serialised (``audit.append``): two admins taking each other's role at once are counted one after the
    other's commit, not both before either, which left none."""
    if not user.is_admin or user.disabled_at is not None:
        return None

    async def check() -> None:
        left = await db.scalar(select(func.count()).select_from(User)
                               .where(User.is_admin.is_(True), User.disabled_at.is_(None)))
        if not left:
            raise Conflict(f"'{user.name}' is the last enabled admin; make another user admin before you {doing} them")

    return check


async def set_password(
    db: AsyncSession, name: str, password: str, *, actor: str, request_id: str | None = None
) -> Removed:
    """Set (or reset) ``name``'s password; their browser sessions end."""
    user = await get_user(db, name)
    user.password_hash = await hash_password_off_loop(check_password(password))
    removed = Removed(sessions=await end_sessions(db, user))
    await _audit(db, "user_passwd", user, actor, request_id, sessions_ended=removed.sessions)
    return removed


async def change_own_password(
    db: AsyncSession, name: str, current: str, password: str, *, guard: LoginGuard, address: str,
    keep_session: str | None = None, request_id: str | None = None,
) -> Removed:
    """``name`` changes their own password, giving the current one. A wrong one counts as a failed login
    (``guard``: limited per account and address, audited); their other browser sessions end, the one whose
    cookie is ``keep_session`` stays, and their API tokens stay."""
    check_password(password)
    await guard.check(name, address)
    user = await get_user(db, name)
    if user.password_hash is None:
        raise Conflict(f"'{name}' has no password to change (API tokens only); an admin can set one")
    if not await verify_password_off_loop(user.password_hash, current):
        await guard.failed(name, address)
        record = AuditRecord(actor=name, action="user_passwd", subject=name, result="failed",
                             reason="wrong current password", request_id=request_id)
        await append(db, record)
        raise PermissionDenied("your current password is not right", field="current_password")
    user.password_hash = await hash_password_off_loop(password)
    removed = Removed(sessions=await end_sessions(db, user, keep=keep_session))
    await _audit(db, "user_passwd", user, name, request_id, sessions_ended=removed.sessions, own=True)
    return removed


async def set_disabled(
    db: AsyncSession, name: str, disabled: bool, *, actor: str, request_id: str | None = None
) -> User:
    """Disable (no login, no token, no session) or enable ``name``."""
    user = await get_user(db, name)
    if disabled == (user.disabled_at is not None):
        return user  # already so: nothing to change or audit
    sessions, keep = 0, None
    if disabled:
        keep = _keep_an_admin(db, user, "disable")
        user.disabled_at = utcnow()
        sessions = await end_sessions(db, user)
    else:
        user.disabled_at = None
    await _audit(
        db,
        "user_disable" if disabled else "user_enable",
        user,
        actor,
        request_id,
        check=keep,
        **({"sessions_ended": sessions} if disabled else {}),
    )
    return user


async def set_admin(db: AsyncSession, name: str, admin: bool, *, actor: str, request_id: str | None = None) -> User:
    """Give ``name`` the admin role, or take it away."""
    user = await get_user(db, name)
    if admin == user.is_admin:
        return user
    keep = None if admin else _keep_an_admin(db, user, "demote")
    user.is_admin = admin
    await _audit(db, "user_admin", user, actor, request_id, check=keep, **{"from": not admin, "to": admin})
    return user


async def log_out_everywhere(
    db: AsyncSession, name: str, *, actor: str, tokens: bool = False, request_id: str | None = None
) -> Removed:
    """End every browser session of ``name``; with ``tokens``, revoke all their API tokens too."""
    user = await get_user(db, name)
    removed = Removed(sessions=await end_sessions(db, user), tokens=await delete_all_tokens(db, user) if tokens else 0)
    await _audit(
        db, "user_logout_all", user, actor, request_id, sessions_ended=removed.sessions, tokens_revoked=removed.tokens
    )
    return removed


async def delete_user(db: AsyncSession, name: str, *, actor: str, request_id: str | None = None) -> Removed:
    """Remove ``name`` and everything that is theirs; the audit log keeps naming them."""
    user = await get_user(db, name)
    keep = _keep_an_admin(db, user, "delete")
    conversations = await db.scalar(
        select(func.count()).select_from(Conversation).where(Conversation.user_id == user.id)
    )
    # Counted first, removed by the cascade with the user row.
    removed = Removed(
        sessions=await end_sessions(db, user),
        tokens=await delete_all_tokens(db, user),
        conversations=conversations or 0,
    )
    await db.delete(user)
    await db.flush()
    await _audit(
        db,
        "user_delete",
        user,
        actor,
        request_id,
        check=keep,
        plan=user.plan,
        admin=user.is_admin,
        conversations_deleted=removed.conversations,
        tokens_revoked=removed.tokens,
    )
    return removed
