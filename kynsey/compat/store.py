"""Storing a compatible API's chat as a conversation (``KYNSEY_COMPAT_STORE``; off by default).

One job (``kynsey/storage/jobs.py``), committed before any backend is called, as
a conversation's turn is: the conversation, the client's messages as it sent
them (system messages are instructions to the model, not shown on the page),
and the empty 'streaming' reply that the reply task then writes and saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from kynsey.backends.base import ChatMessage
from kynsey.storage.models import Conversation, Message, table

SHOWN_ROLES = ("user", "assistant")
# Conversations as a tree of message versions (messages.parent_id, conversations.current_leaf_id), where the
# schema has them: written like a turn of the page's own, so the page shows the exchange as one path.
TREE = "parent_id" in Message.__table__.c and "current_leaf_id" in Conversation.__table__.c


@dataclass(frozen=True, slots=True)
class StoredExchange:
    conversation_id: str
    user_id: int
    reply_id: str
    title: str
    messages: list[ChatMessage]
    message_ids: list[str]  # one per shown message
    tier: str
    model: str
    at: datetime


def shown(messages: list[ChatMessage]) -> list[ChatMessage]:
    return [m for m in messages if m.role in SHOWN_ROLES]


def begin_exchange(exchange: StoredExchange):
    """The job: the conversation, its messages and the streaming reply row."""

    def job(conn: Connection) -> None:
        e = exchange
        common = {"conversation_id": e.conversation_id, "created_at": e.at, "updated_at": e.at}
        conversation = {"id": e.conversation_id, "user_id": e.user_id, "title": e.title, "created_at": e.at,
                        "updated_at": e.at}
        rows = [{**common, "id": mid, "seq": seq, "role": m.role, "content": m.content, "status": "complete",
                 "tier": None, "model": None}
                for seq, (mid, m) in enumerate(zip(e.message_ids, e.messages, strict=True), 1)]
        rows.append({**common, "id": e.reply_id, "seq": len(rows) + 1, "role": "assistant", "content": "",
                     "status": "streaming", "tier": e.tier, "model": e.model})
        if TREE:  # each message follows the one before it; the reply is the path the page shows
            for parent, row in zip([None, *rows], rows, strict=False):
                row["parent_id"] = parent["id"] if parent else None
            conversation["current_leaf_id"] = e.reply_id
        conn.execute(insert(table(Conversation)), conversation)
        conn.execute(insert(table(Message)), rows)

    return job
