"""Conversations belong to one user; anyone else gets a 404, by every route (SPEC N4).

A conversation is a tree of messages (``chat/tree.py``); what is shown, and what
the API answers, is the path to its current leaf, each message with its version
number and its siblings' ids, so the page can move between versions.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.chat import search, tree
from kynsey.chat.live import LiveReplies
from kynsey.chat.store import create_conversation
from kynsey.errors import Conflict, ConversationNotFound, InvalidRequest, NotFound
from kynsey.storage.dml import rows_changed
from kynsey.storage.jobs import Jobs
from kynsey.storage.models import Conversation, Message, User, iso_utc

TITLE_MAX = 200
AUTO_TITLE = 60  # a title made from the first message: at most this long, cut at a word boundary
ID_RE = re.compile(r"[0-9a-f]{32}")  # ids are uuid4 hex; anything else cannot name a row


def new_id() -> str:
    return uuid.uuid4().hex


def clean_title(title: str | None) -> str:
    """A title on one line, without surrounding space; at most TITLE_MAX characters."""
    title = " ".join((title or "").split())
    if len(title) > TITLE_MAX:
        raise InvalidRequest(f"a title has at most {TITLE_MAX} characters", field="title")
    return title


def title_from(content: str) -> str:
    """A conversation's title from its first message: its start, cut at a word boundary."""
    line = " ".join(content.split())
    if len(line) <= AUTO_TITLE:
        return line
    cut = line[: AUTO_TITLE + 1]
    space = cut.rfind(" ")
    head = cut[:space] if space >= AUTO_TITLE // 3 else line[:AUTO_TITLE]  # one long word (a URL): cut it
    return head.rstrip(" ,.;:-") + "…"


async def create(jobs: Jobs, user: User, title: str | None) -> dict:
    """A new conversation, as the API shows it (one database job: hundreds may start at once)."""
    row = await jobs.write(create_conversation(new_id(), user.id, clean_title(title), datetime.now(UTC)))
    return conversation_public(Conversation(**row))


async def owned(db: AsyncSession, user: User, conversation_id: str) -> Conversation:
    conversation = await db.get(Conversation, conversation_id) if ID_RE.fullmatch(conversation_id) else None
    if conversation is None or conversation.user_id != user.id:
        raise ConversationNotFound(f"there is no conversation {conversation_id[:40]!r} for you")
    return conversation


async def listing(db: AsyncSession, user: User, q: str | None, limit: int = 200) -> list[dict]:
    """The user's conversations, newest first; with ``q``, those whose title or text holds it (with a snippet)."""
    q = search.check_query(q or "")
    if q:
        return [conversation_public(c) | {"snippet": text} for c, text in await search.search(db, user, q, limit)]
    stmt = select(Conversation).where(Conversation.user_id == user.id).order_by(Conversation.updated_at.desc()).limit(limit)
    return [conversation_public(c) for c in await db.scalars(stmt)]


async def messages(db: AsyncSession, conversation_id: str) -> list[Message]:
    """Every message of the conversation, every version, in the order they were written."""
    stmt = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.seq)
    return list(await db.scalars(stmt))


async def shown(db: AsyncSession, live: LiveReplies, user: User, conversation_id: str) -> dict:
    """The conversation as the API shows it: the path to its current leaf, with versions."""
    conversation = await owned(db, user, conversation_id)
    return _view(conversation, await messages(db, conversation.id), live)


def _view(conversation: Conversation, rows: list[Message], live: LiveReplies) -> dict:
    kids = tree.children(rows)
    path = tree.shown_path(rows, conversation.current_leaf_id)
    return conversation_public(conversation) | {
        "current_leaf_id": path[-1].id if path else None,
        "messages": [message_public(m, live.overlay(m.id)) | tree.version_info(m, kids) for m in path],
    }


async def rename(db: AsyncSession, user: User, conversation_id: str, title: str) -> dict:
    conversation = await owned(db, user, conversation_id)
    title = clean_title(title)
    if not title:
        raise InvalidRequest("a title cannot be empty", field="title")
    conversation.title = title  # renaming does not move it up the list: updated_at stays
    await db.commit()
    return conversation_public(conversation)


async def show_version(db: AsyncSession, live: LiveReplies, user: User, conversation_id: str, message_id: str) -> dict:
    """Show ``message_id``: the shown leaf moves to the end of its newest branch."""
    conversation = await owned(db, user, conversation_id)
    rows = await messages(db, conversation.id)
    target = next((m for m in rows if m.id == message_id), None)
    if target is None:
        raise NotFound(f"there is no message '{message_id[:40]}' in this conversation")
    if any(m.status == "streaming" for m in rows):
        raise Conflict("a reply in this conversation is still being written; wait for it, or stop it")
    leaf = tree.deepest(target, tree.children(rows))
    was = conversation.current_leaf_id
    same = Conversation.current_leaf_id == was if was else Conversation.current_leaf_id.is_(None)
    moved = await rows_changed(db, update(Conversation).where(Conversation.id == conversation.id, same)
                             .values(current_leaf_id=leaf.id).execution_options(synchronize_session=False))
    if moved != 1:  # a turn began meanwhile: its reply is the leaf now
        await db.rollback()
        raise Conflict("this conversation changed meanwhile; reload it")
    await db.commit()
    conversation.current_leaf_id = leaf.id
    return _view(conversation, rows, live)


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
