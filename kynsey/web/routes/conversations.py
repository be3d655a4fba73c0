"""Conversations and streamed replies (SPEC F5)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from kynsey.chat import conversations, service
from kynsey.chat.sse import replay_stored, stream_live
from kynsey.errors import NotFound
from kynsey.web.deps import DbDep, RuntimeDep, UserDep
from kynsey.web.schemas import ConversationIn, MessageIn

router = APIRouter(prefix="/api/conversations", tags=["chat"])
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("", status_code=201)
async def create_conversation(body: ConversationIn, rt: RuntimeDep, user: UserDep) -> dict:
    return await conversations.create(rt.jobs, user, body.title)


@router.get("")
async def list_conversations(db: DbDep, user: UserDep) -> dict:
    return {"conversations": [conversations.conversation_public(c) for c in await conversations.list_for(db, user)]}


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: str, rt: RuntimeDep, db: DbDep, user: UserDep) -> dict:
    conversation = await conversations.owned(db, user, conversation_id)
    messages = []
    for message in await conversations.messages(db, conversation.id):
        messages.append(conversations.message_public(message, rt.live.overlay(message.id)))
    return conversations.conversation_public(conversation) | {"messages": messages}


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(conversation_id: str, db: DbDep, user: UserDep) -> Response:
    await conversations.remove(db, user, conversation_id)
    return Response(status_code=204)


@router.post("/{conversation_id}/messages")
async def post_message(conversation_id: str, body: MessageIn, rt: RuntimeDep, user: UserDep) -> StreamingResponse:
    live = await service.send_message(rt, user, conversation_id, body.content)
    return StreamingResponse(stream_live(live), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/{conversation_id}/messages/{message_id}/stream")
async def reattach(conversation_id: str, message_id: str, rt: RuntimeDep, db: DbDep, user: UserDep) -> StreamingResponse:
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
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
