"""Find a user's conversations by title or by the text of any message (SPEC F18).

Matching is a case-insensitive substring test, done by the database so it holds
for long histories: ``ILIKE`` on PostgreSQL, ``lower(...) LIKE lower(...)`` on
SQLite (whose ``lower`` folds ASCII letters only). The query's ``%``, ``_`` and
escape character are escaped, so they match themselves. Every version of every
message counts, shown or not. Each hit carries a snippet of the first message
that matched, when its title did not.
"""

from __future__ import annotations

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.errors import InvalidRequest
from kynsey.storage.models import Conversation, Message, User

QUERY_MAX = 100
SNIPPET_BEFORE, SNIPPET_AFTER = 30, 70


def check_query(q: str) -> str:
    q = " ".join(q.split())
    if len(q) > QUERY_MAX:
        raise InvalidRequest(f"a search has at most {QUERY_MAX} characters", field="q")
    return q


async def search(db: AsyncSession, user: User, q: str, limit: int) -> list[tuple[Conversation, str | None]]:
    """``user``'s conversations whose title or any message holds ``q``, newest first, with snippets."""
    holds = Message.content.icontains(q, autoescape=True)
    first_hit = (
        select(Message.content)
        .where(Message.conversation_id == Conversation.id, holds)
        .order_by(Message.seq)
        .limit(1)
        .scalar_subquery()
    )
    in_title = Conversation.title.icontains(q, autoescape=True)
    stmt = (
        select(Conversation, first_hit)
        .where(
            Conversation.user_id == user.id,
            or_(in_title, exists().where(Message.conversation_id == Conversation.id, holds)),
        )
        .order_by(Conversation.updated_at.desc())
        .limit(limit)
    )
    found = []
    for conversation, text in await db.execute(stmt):
        titled = q.lower() in conversation.title.lower()
        found.append((conversation, None if titled or text is None else snippet(text, q)))
    return found


def snippet(text: str, q: str) -> str:
    """A line of ``text`` around the first ``q``, cut at word boundaries."""
    flat = " ".join(text.split())
    at = max(flat.lower().find(q.lower()), 0)  # not found: the database folded a case Python does not
    start, end = max(0, at - SNIPPET_BEFORE), min(len(flat), at + len(q) + SNIPPET_AFTER)
    if start > 0 and (space := flat.find(" ", start, at)) >= 0:
        start = space + 1
    if end < len(flat) and (space := flat.rfind(" ", at + len(q), end)) >= 0:
        end = space
    return ("…" if start > 0 else "") + flat[start:end] + ("…" if end < len(flat) else "")
