"""Conversations and streamed replies (SPEC F5, F18)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from kynsey.chat import conversations, service
from kynsey.chat.live import LiveReply
from kynsey.chat.search import QUERY_MAX
from kynsey.chat.sse import encode, replay_stored, stream_live
from kynsey.errors import NotFound
from kynsey.web.deps import DbDep, RuntimeDep, UserDep
from kynsey.web.schemas import (
    ConversationIn,
    ConversationListPublic,
    ConversationPublic,
    ConversationViewPublic,
    MessageIn,
    RegenerateIn,
    RenameIn,
    StopPublic,
)

router = APIRouter(prefix="/api/conversations", tags=["chat"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A search: short, and without NUL (PostgreSQL cannot compare text holding one).
SearchText = Annotated[str | None, Query(max_length=QUERY_MAX, pattern=r"^[^\x00]*$")]


class EventStream(StreamingResponse):
    """A reply's server-sent events: the OpenAPI document says text/event-stream, not JSON."""

    media_type = "text/event-stream"


def _stream(live: LiveReply, status: int = 200, first: bytes = b"", headers: dict | None = None) -> EventStream:
    """A reply's events. Its ids are in the headers too, so a client can stop it before its first token."""
    events = _after(first, stream_live(live)) if first else stream_live(live)
    ids = {"X-Conversation-Id": live.conversation_id, "X-Message-Id": live.message_id,
           "X-User-Message-Id": live.user_message_id}
    return EventStream(events, status_code=status, headers={**SSE_HEADERS, **ids, **(headers or {})})


async def _after(first: bytes, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in events:
        yield chunk


CREATED: dict[int | str, dict[str, Any]] = {201: {"model": ConversationPublic, "description": "the conversation; with `content`, an event stream "
                 "(text/event-stream) whose first event is `conversation`", "content": {"text/event-stream": {}}}}


@router.post("", status_code=201, response_model=None, responses=CREATED)
async def create_conversation(body: ConversationIn, rt: RuntimeDep, user: UserDep) -> ConversationPublic | EventStream:
    if body.content is None:
        return ConversationPublic.model_validate(await conversations.create(rt.jobs, user, body.title))
    conversation, live = await service.start_conversation(rt, user, body.content, body.title)
    location = {"Location": f"/api/conversations/{conversation['id']}"}
    return _stream(live, 201, encode("conversation", conversation), location)


@router.get("", response_model_exclude_unset=True)  # a snippet only when searching
async def list_conversations(db: DbDep, user: UserDep, q: SearchText = None) -> ConversationListPublic:
    return ConversationListPublic.model_validate({"conversations": await conversations.listing(db, user, q)})


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, rt: RuntimeDep, db: DbDep, user: UserDep) -> ConversationViewPublic:
    return ConversationViewPublic.model_validate(await conversations.shown(db, rt.live, user, conversation_id))


@router.patch("/{conversation_id}")
async def rename_conversation(conversation_id: str, body: RenameIn, db: DbDep, user: UserDep) -> ConversationPublic:
    return ConversationPublic.model_validate(await conversations.rename(db, user, conversation_id, body.title))


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, db: DbDep, user: UserDep) -> Response:
    await conversations.remove(db, user, conversation_id)
    return Response(status_code=204)


@router.post("/{conversation_id}/messages", response_class=EventStream)
async def post_message(conversation_id: str, body: MessageIn, rt: RuntimeDep, user: UserDep) -> EventStream:
    return _stream(await service.send_message(rt, user, conversation_id, body.content))


@router.post("/{conversation_id}/messages/{message_id}/edit", response_class=EventStream)
async def edit_message(conversation_id: str, message_id: str, body: MessageIn, rt: RuntimeDep,
                       user: UserDep) -> EventStream:
    return _stream(await service.edit_message(rt, user, conversation_id, message_id, body.content))


@router.post("/{conversation_id}/messages/{message_id}/regenerate", response_class=EventStream)
async def regenerate(conversation_id: str, message_id: str, rt: RuntimeDep, user: UserDep,
                     body: RegenerateIn | None = None) -> EventStream:
    tier = body.tier if body else None
    return _stream(await service.regenerate(rt, user, conversation_id, message_id, tier))


@router.post("/{conversation_id}/messages/{message_id}/show")
async def show_version(conversation_id: str, message_id: str, rt: RuntimeDep, db: DbDep,
                       user: UserDep) -> ConversationViewPublic:
    shown = await conversations.show_version(db, rt.live, user, conversation_id, message_id)
    return ConversationViewPublic.model_validate(shown)


@router.post("/{conversation_id}/messages/{message_id}/stop")
async def stop_reply(conversation_id: str, message_id: str, rt: RuntimeDep, db: DbDep, user: UserDep) -> StopPublic:
    return StopPublic.model_validate(await service.stop_reply(rt, db, user, conversation_id, message_id))


@router.get("/{conversation_id}/messages/{message_id}/stream", response_class=EventStream)
async def reattach(conversation_id: str, message_id: str, rt: RuntimeDep, db: DbDep, user: UserDep) -> EventStream:
    conversation = await conversations.owned(db, user, conversation_id)
    live = rt.live.get(message_id)
    if live is not None and live.conversation_id == conversation.id:
        events = stream_live(live)
    else:
        stored = await service.stored_reply(db, conversation.id, message_id)
        if stored is None:
            raise NotFound(f"there is no reply '{message_id[:40]}' in this conversation")
        events = replay_stored(rt, stored)
    await db.close()  # hand the connection back now: the stream may last minutes
    return EventStream(events, headers=SSE_HEADERS)
