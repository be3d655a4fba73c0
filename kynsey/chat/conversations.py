"""Conversations belong to one user; anyone else gets a 404, by every route (SPEC N4)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.chat.store import create_conversation
from kynsey.errors import ConversationNotFound, InvalidRequest
from kynsey.storage.jobs import Jobs
from kynsey.storage.models import Conversation, Message, User, iso_utc

TITLE_MAX = 200
ID_RE = re.compile(r"[0-9a-f]{32}")  # ids are uuid4 hex; anything else cannot name a row


def new_id() -> str:
    return uuid.uuid4().hex


async def create(jobs: Jobs, user: User, title: str | None) -> dict:
    """A new conversation, as the API shows it (one database job: hundreds may start at once)."""
    title = (title or "").strip()
    if len(title) > TITLE_MAX:
        raise InvalidRequest(f"a title has at most {TITLE_MAX} characters", field="title")
    row = await jobs.run(create_conversation(new_id(), user.id, title, datetime.now(UTC)))
    return conversation_public(Conversation(**row))


async def owned(db: AsyncSession, user: User, conversation_id: str) -> Conversation:
    conversation = await db.get(Conversation, conversation_id) if ID_RE.fullmatch(conversation_id) else None
    if conversation is None or conversation.user_id != user.id:
        raise ConversationNotFound(f"there is no conversation {conversation_id[:40]!r} for you")
    return conversation


async def list_for(db: AsyncSession, user: User, limit: int = 200) -> list[Conversation]:
    stmt = select(Conversation).where(Conversation.user_id == user.id).order_by(Conversation.updated_at.desc()).limit(limit)
    return list(await db.scalars(stmt))


async def messages(db: AsyncSession, conversation_id: str) -> list[Message]:
    stmt = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
    return list(await db.scalars(stmt))


async def remove(db: AsyncSession, user: User, conversation_id: str) -> None:
    conversation = await owned(db, user, conversation_id)
    await db.execute(delete(Message).where(Message.conversation_id == conversation.id))
    await db.delete(conversation)
    await db.commit()


def message_public(message: Message, overlay: dict | None = None) -> dict:
    """A message as the API shows it; ``overlay`` is what this process knows that the row does not yet."""
    public = {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "tier": message.tier,
        "model": message.model,
        "fallback_from": message.fallback_from,
        "fallback_reason": message.fallback_reason,
        "error": message.error,
        "ttft_ms": message.ttft_ms,
        "tokens": message.tokens,
        "tokens_per_s": message.tokens_per_s,
        "load_ms": message.load_ms,
        "created_at": iso_utc(message.created_at),
    }
    return public | {k: v for k, v in (overlay or {}).items() if k in public}


def conversation_public(conversation: Conversation) -> dict:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "created_at": iso_utc(conversation.created_at),
        "updated_at": iso_utc(conversation.updated_at),
    }
