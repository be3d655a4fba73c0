"""The chat path's database work, as jobs (``kynsey/storage/jobs.py``): each runs whole in one
transaction, in one hop on SQLite.

A turn's job checks the conversation is the caller's and idle, reads its history,
and commits the user's message with an empty 'streaming' reply, before any
backend is called (SPEC F5): one job, not a dozen round trips, because it sits
on every reply's time to first token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from kynsey.backends.base import ChatMessage
from kynsey.errors import Conflict, ConversationNotFound
from kynsey.storage.models import Conversation, Message

CONVERSATIONS = Conversation.__table__
MESSAGES = Message.__table__
PROGRESS = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("mid"), MESSAGES.c.status == "streaming")
    .values(content=bindparam("text"), updated_at=bindparam("now"))
)


@dataclass(frozen=True, slots=True)
class Turn:
    """A user's message and the reply row it opens, ready to insert."""

    conversation_id: str
    user_id: int
    asked_id: str
    reply_id: str
    content: str
    tier: str
    model: str
    title: str
    at: datetime


def begin_turn(turn: Turn):
    """The job: ownership, idle check, history, then both rows; returns the history to send."""

    def job(conn: Connection) -> list[ChatMessage]:
        owner = conn.execute(
            select(CONVERSATIONS.c.user_id, CONVERSATIONS.c.title).where(CONVERSATIONS.c.id == turn.conversation_id)
        ).first()
        if owner is None or owner.user_id != turn.user_id:
            raise ConversationNotFound(f"there is no conversation {turn.conversation_id[:40]!r} for you")
        earlier = conn.execute(
            select(MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.status, MESSAGES.c.seq)
            .where(MESSAGES.c.conversation_id == turn.conversation_id)
            .order_by(MESSAGES.c.seq)
        ).all()
        if any(m.status == "streaming" for m in earlier):
            raise Conflict("a reply in this conversation is still being written; wait for it or re-attach to it")
        seq = (earlier[-1].seq if earlier else 0) + 1
        common = {"conversation_id": turn.conversation_id, "created_at": turn.at, "updated_at": turn.at}
        try:
            conn.execute(insert(MESSAGES), [
                {**common, "id": turn.asked_id, "seq": seq, "role": "user", "content": turn.content,
                 "status": "complete", "tier": None, "model": None},
                {**common, "id": turn.reply_id, "seq": seq + 1, "role": "assistant", "content": "",
                 "status": "streaming", "tier": turn.tier, "model": turn.model},
            ])
        except IntegrityError as exc:
            raise Conflict("another message was sent to this conversation at the same moment; reload it") from exc
        conn.execute(update(CONVERSATIONS).where(CONVERSATIONS.c.id == turn.conversation_id)
                     .values(updated_at=turn.at, title=owner.title or turn.title))
        history = [ChatMessage(m.role, m.content) for m in earlier if m.content and m.status != "failed"]
        return [*history, ChatMessage("user", turn.content)]

    return job


def set_reply(message_id: str, values: dict[str, Any]):
    """The job: write a reply's columns (a fallback's tier, or its final state)."""

    def job(conn: Connection) -> None:
        conn.execute(update(MESSAGES).where(MESSAGES.c.id == message_id).values(**values))

    return job


def save_replies(finals: dict[str, dict[str, Any]], progress: list[dict[str, Any]]):
    """The job: final states (unconditional) and the text of replies still streaming."""

    def job(conn: Connection) -> None:
        for message_id, values in finals.items():
            conn.execute(update(MESSAGES).where(MESSAGES.c.id == message_id).values(**values))
        if progress:
            conn.execute(PROGRESS, progress)

    return job


def sweep_orphans(live: list[str], now: datetime, cutoff: datetime, error: str):
    """The job: touch this instance's live replies; mark others untouched since ``cutoff`` interrupted."""

    def job(conn: Connection) -> int:
        if live:
            conn.execute(update(MESSAGES).where(MESSAGES.c.id.in_(live), MESSAGES.c.status == "streaming")
                         .values(updated_at=now))
        stmt = (
            update(MESSAGES)
            .where(MESSAGES.c.status == "streaming", MESSAGES.c.updated_at < cutoff)
            .values(status="interrupted", error=error, updated_at=now)
        )
        if live:
            stmt = stmt.where(MESSAGES.c.id.not_in(live))
        return conn.execute(stmt).rowcount

    return job


def create_conversation(conversation_id: str, user_id: int, title: str, at: datetime):
    def job(conn: Connection) -> dict[str, Any]:
        row = {"id": conversation_id, "user_id": user_id, "title": title, "created_at": at, "updated_at": at}
        conn.execute(insert(CONVERSATIONS), row)
        return row

    return job
