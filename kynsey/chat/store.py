"""The chat path's database work, as jobs (``kynsey/storage/jobs.py``): each runs whole in one
hop, in one transaction (or, on PostgreSQL, as statements each atomic on its own: ``Jobs.write``).

A turn's job checks the conversation is the caller's and idle, reads its history
(the path of the message tree the new message hangs from, ``chat/tree.py``), and
commits the user's message with an empty 'streaming' reply, before any backend
is called (SPEC F5): one job, not a dozen round trips, because it sits on every
reply's time to first token. Its rows are written by one statement
(``storage/dml.write_together``), so on PostgreSQL it runs without BEGIN and
COMMIT (``Jobs.write``): two round trips, a read and a write. A new question to
a conversation on PostgreSQL is one: a statement that writes only if the checks
hold, and hands back what the read would have (``_guarded_send_statement``).
Editing a message, regenerating a reply and a conversation's first message
(which creates it, one statement with no read) go through the same job.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, insert, literal, null, or_, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import ColumnElement, Executable

from kynsey.backends.base import ChatMessage
from kynsey.chat import tree
from kynsey.errors import Conflict, ConversationNotFound, NotFound
from kynsey.storage.dml import write_together
from kynsey.storage.models import Conversation, Message, table
from kynsey.storage.prepared import Prepared

CONVERSATIONS = table(Conversation)
MESSAGES = table(Message)
_MESSAGE_COLUMNS = (MESSAGES.c.id, MESSAGES.c.parent_id, MESSAGES.c.role, MESSAGES.c.content, MESSAGES.c.status,
                    MESSAGES.c.seq)
_TURN_ROW = ("id", "conversation_id", "parent_id", "seq", "role", "content", "status", "tier", "model", "created_at",
             "updated_at")
CONVERSATION_MESSAGES = Prepared(  # a conversation's owner, leaf and title beside every message (none for a new one)
    select(CONVERSATIONS.c.user_id, CONVERSATIONS.c.title, CONVERSATIONS.c.current_leaf_id, *_MESSAGE_COLUMNS)
    .select_from(CONVERSATIONS.outerjoin(MESSAGES, MESSAGES.c.conversation_id == CONVERSATIONS.c.id))
    .where(CONVERSATIONS.c.id == bindparam("cid"))
    .order_by(MESSAGES.c.seq)
)
PROGRESS = Prepared(  # a streaming reply's whole text so far
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("mid"), MESSAGES.c.status == "streaming")
    .values(content=bindparam("text"), updated_at=bindparam("now"))
)
PROGRESS_APPEND = Prepared(  # what a streaming reply wrote since its row was last saved
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("mid"), MESSAGES.c.status == "streaming")
    .values(content=func.coalesce(MESSAGES.c.content, "").concat(bindparam("delta")), updated_at=bindparam("now"))
)


@dataclass(frozen=True, slots=True)
class Turn:
    """A turn to open: the reply row, and the user's message it answers unless it regenerates one.

    - send: ``content`` set, no ``target_id``: a new question after the shown leaf.
    - edit: ``content`` set, ``target_id`` a user message: a new version of it, beside it.
    - regenerate: no ``content``, ``target_id`` an assistant message: a new version of it.
    ``create``: the conversation is new too (its first message); it is inserted in the same job.
    """

    conversation_id: str
    user_id: int
    reply_id: str
    tier: str
    model: str
    at: datetime
    content: str | None = None
    asked_id: str | None = None
    title: str = ""
    target_id: str | None = None
    create: bool = False
    # Replies this process has ended whose final save may not have landed yet (``LiveReplies.unsaved``):
    # a reply that ended a moment ago is not "still being written", and its final text is the history.
    settled: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Opened:
    """What a turn's job hands back: the history to send, and the user message the reply answers."""

    history: list[ChatMessage]
    asked_id: str


def begin_turn(turn: Turn):
    """The job: ownership (or the new conversation), idle check, the history along the tree, then the rows."""

    def job(conn: Connection) -> Opened:
        guarded = _guarded_send(conn.dialect.name, turn)
        if guarded is not None and turn.asked_id:
            with _racing():
                rows = guarded.rows(conn, _guarded_values(turn))
            if rows and rows[0].written:  # the caller's, idle, at its stored leaf: the rows are written
                earlier = _messages(rows, turn.settled)
                return _opened(turn, tree.shown_path(earlier, rows[0].current_leaf_id), turn.asked_id)
        else:
            rows = [] if turn.create else CONVERSATION_MESSAGES.rows(conn, {"cid": turn.conversation_id})
        earlier, leaf_id, title = _open(rows, turn)
        path = _history_path(turn, earlier, leaf_id)
        seq = (earlier[-1].seq if earlier else 0) + 1
        common = {"conversation_id": turn.conversation_id, "created_at": turn.at, "updated_at": turn.at}
        inserts: list[dict[str, Any]] = []  # the new messages
        asked_id = path[-1].id if turn.content is None else turn.asked_id
        if asked_id is None:
            raise ValueError("a turn that sends a message names that message's id (asked_id)")
        if turn.content is not None:
            inserts.append({**common, "id": turn.asked_id, "parent_id": path[-1].id if path else None, "seq": seq,
                            "role": "user", "content": turn.content, "status": "complete", "tier": None,
                            "model": None})
        inserts.append({**common, "id": turn.reply_id, "parent_id": asked_id, "seq": seq + len(inserts),
                        "role": "assistant", "content": "", "status": "streaming", "tier": turn.tier,
                        "model": turn.model})
        values = {"cid": turn.conversation_id, "user_id": turn.user_id, "title": title or turn.title, "at": turn.at,
                  "leaf": turn.reply_id}
        values |= {f"m{n}_{column}": value for n, row in enumerate(inserts) for column, value in row.items()}
        # One statement: the read above needs no transaction around it, since a turn racing this one
        # takes the same ``seq`` and the unique index refuses one of them.
        with _racing():
            for statement in _turn_writes(conn.dialect.name, turn.create, len(inserts)):
                statement.run(conn, values)
        return _opened(turn, path, asked_id)

    return job


def _opened(turn: Turn, path: list, asked_id: str) -> Opened:
    history = [ChatMessage(m.role, m.content) for m in path if m.content and m.status != "failed"]
    if turn.content is not None:
        history.append(ChatMessage("user", turn.content))
    return Opened(history, asked_id)


@contextmanager
def _racing() -> Iterator[None]:
    try:
        yield
    except IntegrityError as exc:
        raise Conflict("another message was sent to this conversation at the same moment; reload it") from exc


@functools.cache
def _turn_writes(dialect: str, create: bool, messages: int) -> list[Prepared]:
    """A turn's writes, one statement where the database can (``write_together``): the conversation
    when it is new, its ``messages`` new rows, else its new leaf. Built and compiled once per shape
    (``storage/prepared.py``), with bound parameters only and a row per INSERT."""
    rows = [insert(MESSAGES).values({c: bindparam(f"m{n}_{c}") for c in _TURN_ROW}) for n in range(messages)]
    if create:
        conversation = insert(CONVERSATIONS).values(
            id=bindparam("cid"), user_id=bindparam("user_id"), title=bindparam("title"), created_at=bindparam("at"),
            updated_at=bindparam("at"), current_leaf_id=bindparam("leaf"))
        return _prepared(write_together(dialect, conversation, *rows))
    leaf = (update(CONVERSATIONS).where(CONVERSATIONS.c.id == bindparam("cid"))
            .values(updated_at=bindparam("at"), title=bindparam("title"), current_leaf_id=bindparam("leaf")))
    return _prepared(write_together(dialect, *rows, leaf))


def _prepared(statements: list[Executable]) -> list[Prepared]:
    return [Prepared(s) for s in statements]


def _guarded_send(dialect: str, turn: Turn) -> Prepared | None:
    """The one statement a new question to a stored conversation can be on PostgreSQL (``_GUARDED_SEND``)."""
    if dialect != "postgresql" or turn.create or turn.content is None or turn.target_id is not None:
        return None
    return _GUARDED_SEND


def _guarded_values(turn: Turn) -> dict[str, Any]:
    return {"cid": turn.conversation_id, "user_id": turn.user_id, "asked_id": turn.asked_id, "content": turn.content,
            "reply_id": turn.reply_id, "tier": turn.tier, "model": turn.model, "at": turn.at, "title": turn.title}


def _guarded_send_statement() -> Executable:
    """A new question and its reply, written only if the conversation is the caller's, has no reply
    streaming and shows a stored leaf (or has no messages yet), the question following that leaf.
    Its rows are the conversation's as before the write (``CONVERSATION_MESSAGES``'s, and
    ``written``), so a turn the guard refuses reads nothing more to say why or to write as usual.

    One round trip where a turn is otherwise two: a read, then a write that depends on it. The
    parts see one snapshot; a turn racing this one takes the same ``seq``, and the unique index
    refuses one of them."""

    def param(name: str, column) -> Any:
        return bindparam(name, type_=column.type)

    conv = (select(CONVERSATIONS.c.user_id, CONVERSATIONS.c.title, CONVERSATIONS.c.current_leaf_id)
            .where(CONVERSATIONS.c.id == bindparam("cid")).cte("conv"))
    msgs = select(*_MESSAGE_COLUMNS).where(MESSAGES.c.conversation_id == bindparam("cid")).cte("msgs")
    at_leaf = or_(exists().where(msgs.c.id == conv.c.current_leaf_id),
                  and_(conv.c.current_leaf_id.is_(None), ~exists().where(msgs.c.id.is_not(None))))
    top = func.coalesce(select(func.max(msgs.c.seq)).scalar_subquery(), 0)
    ok = (select(conv.c.current_leaf_id.label("leaf"), top.label("top"))
          .where(conv.c.user_id == bindparam("user_id"), ~exists().where(msgs.c.status == "streaming"), at_leaf)
          .cte("ok"))
    columns = [MESSAGES.c[c] for c in _TURN_ROW]
    at = param("at", MESSAGES.c.created_at)
    asked = select(param("asked_id", MESSAGES.c.id), param("cid", MESSAGES.c.conversation_id), ok.c.leaf, ok.c.top + 1,
                   literal("user"), param("content", MESSAGES.c.content), literal("complete"), null(), null(), at, at)
    reply = select(param("reply_id", MESSAGES.c.id), param("cid", MESSAGES.c.conversation_id),
                   param("asked_id", MESSAGES.c.parent_id), ok.c.top + 2, literal("assistant"), literal(""),
                   literal("streaming"), param("tier", MESSAGES.c.tier), param("model", MESSAGES.c.model), at, at)
    leaf = (update(CONVERSATIONS)
            .where(CONVERSATIONS.c.id == bindparam("cid"), exists().where(ok.c.top.is_not(None)))
            .values(updated_at=at, current_leaf_id=param("reply_id", CONVERSATIONS.c.current_leaf_id),
                    title=func.coalesce(func.nullif(CONVERSATIONS.c.title, ""), param("title", CONVERSATIONS.c.title)))
            .returning(CONVERSATIONS.c.id).cte("leaf"))
    written = select(func.count()).select_from(leaf).scalar_subquery().label("written")
    return (select(conv.c.user_id, conv.c.title, conv.c.current_leaf_id, *msgs.c, written)
            .select_from(conv.outerjoin(msgs, true()))
            .order_by(msgs.c.seq)
            .add_cte(insert(MESSAGES).from_select(columns, asked).cte("asked"),
                     insert(MESSAGES).from_select(columns, reply).cte("reply")))


_GUARDED_SEND = Prepared(_guarded_send_statement())


def _open(rows: list, turn: Turn) -> tuple[list, str | None, str]:
    """The conversation's messages (every version), shown leaf and title, from its ``rows``
    (``CONVERSATION_MESSAGES``), once it is known to be the caller's and idle; none for a new
    conversation (the turn's write inserts it)."""
    if turn.create:
        return [], None, turn.title
    if not rows or rows[0].user_id != turn.user_id:
        raise ConversationNotFound(f"there is no conversation {turn.conversation_id[:40]!r} for you")
    earlier = _messages(rows, turn.settled)
    if any(m.status == "streaming" for m in earlier):
        raise Conflict("a reply in this conversation is still being written; wait for it or re-attach to it")
    return earlier, rows[0].current_leaf_id, rows[0].title


def _messages(rows: list, settled: dict[str, dict[str, Any]]) -> list[SimpleNamespace]:
    """The messages among a conversation's ``rows``, with the final state of those ``settled``."""
    earlier = [SimpleNamespace(**{c.name: getattr(r, c.name) for c in _MESSAGE_COLUMNS}) for r in rows if r.id is not None]
    return [_settle(m, settled[m.id]) if m.id in settled else m for m in earlier]


def _settle(row, final: dict[str, Any]) -> SimpleNamespace:
    """``row`` with the final status and text its reply ended with."""
    return SimpleNamespace(**(vars(row) | {k: final[k] for k in ("status", "content") if k in final}))


def _history_path(turn: Turn, earlier, leaf_id: str | None) -> list:
    """The messages the new one follows: the shown path for a new question; for a new version
    of a message, the path to its parent (the reply regenerated answers that parent)."""
    by_id = {m.id: m for m in earlier}
    if turn.target_id is None:
        return tree.shown_path(earlier, leaf_id)
    target = by_id.get(turn.target_id)
    role = "assistant" if turn.content is None else "user"
    if target is None or target.role != role or (role == "assistant" and not target.parent_id):
        what = "reply" if role == "assistant" else "message of yours"
        raise NotFound(f"there is no {what} '{turn.target_id[:40]}' in this conversation")
    return tree.path_to(by_id.get(target.parent_id), by_id) if target.parent_id else []


def set_reply(message_id: str, values: dict[str, Any]):
    """The job: write a reply's columns (a fallback's tier, or its final state)."""

    def job(conn: Connection) -> None:
        _set_columns(*sorted(values)).run(conn, {"mid": message_id, **values})

    return job


@functools.cache
def _set_columns(*columns: str) -> Prepared:
    """UPDATE a reply's ``columns``, built once per set of columns (every reply's final save runs one)."""
    return Prepared(update(MESSAGES).where(MESSAGES.c.id == bindparam("mid")).values({c: bindparam(c) for c in columns}))


def save_replies(finals: dict[str, dict[str, Any]], whole: list[dict[str, Any]], appended: list[dict[str, Any]]):
    """The job: final states (unconditional), and the text of replies still streaming: ``whole``
    rows carry all of it (``text``), ``appended`` rows what came since the last save (``delta``).
    Appending sends each piece of text once, instead of the whole reply at every flush."""

    def job(conn: Connection) -> None:
        for message_id, values in finals.items():
            set_reply(message_id, values)(conn)
        if whole:
            PROGRESS.run_many(conn, whole)
        if appended:
            PROGRESS_APPEND.run_many(conn, appended)

    return job


def _free(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """The streaming replies that meet ``conditions`` and no other transaction is writing: the
    sweep passes over a row someone holds (PostgreSQL's SKIP LOCKED; SQLite has one writer)."""
    free = select(MESSAGES.c.id).where(MESSAGES.c.status == "streaming", *conditions)
    return MESSAGES.c.id.in_(free.with_for_update(skip_locked=True).scalar_subquery())


TOUCH = Prepared(  # a live reply's row, still this instance's
    update(MESSAGES).where(_free(MESSAGES.c.id == bindparam("mid"))).values(updated_at=bindparam("now"))
)
ORPHANS = Prepared(  # streaming replies no instance has touched since ``cutoff``
    update(MESSAGES)
    .where(_free(MESSAGES.c.updated_at < bindparam("cutoff")))
    .values(status="interrupted", error=bindparam("error"), updated_at=bindparam("now"))
)


def sweep_orphans(live: list[str], now: datetime, cutoff: datetime, error: str):
    """The job: touch this instance's live replies; mark others untouched since ``cutoff`` interrupted.

    It waits on no row lock (``_free``), so it cannot close a deadlock. It did with a flush, which
    writes the same rows in another order: each waited on a row the other held, PostgreSQL failed
    one of the two, and a failed flush ends replies. A row skipped is one its writer is writing.

    A statement per reply touched, in one call to the driver, not one ``IN`` list: the SQL
    of an ``IN`` list changes with its length, and on PostgreSQL each length was a statement
    prepared anew and kept in every pooled connection's cache (the memory bench saw it grow
    round after round)."""

    def job(conn: Connection) -> int:
        if live:
            TOUCH.run_many(conn, [{"mid": message_id, "now": now} for message_id in live])
        # In the same transaction, after the touch: none of this instance's that it touched is older than ``cutoff``.
        return ORPHANS.run(conn, {"cutoff": cutoff, "error": error, "now": now})

    return job


def create_conversation(conversation_id: str, user_id: int, title: str, at: datetime):
    """The job: an empty conversation (the page's first message creates one with ``begin_turn``)."""

    def job(conn: Connection) -> dict[str, Any]:
        row = {"id": conversation_id, "user_id": user_id, "title": title, "created_at": at, "updated_at": at}
        conn.execute(insert(CONVERSATIONS), row)
        return row

    return job
