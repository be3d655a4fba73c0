"""Replies being generated in this process, with everyone listening to them.

A reply's generation is independent of any HTTP connection: the browser may
leave and come back (re-attach) while the text keeps arriving and being saved.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

Event = tuple[str, dict[str, Any]]


@dataclass
class LiveReply:
    message_id: str
    conversation_id: str
    user_id: int
    user_message_id: str = ""
    parts: list[str] = field(default_factory=list)
    start: dict[str, Any] | None = None
    final: Event | None = None
    listeners: set[asyncio.Queue[Event | None]] = field(default_factory=set)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def publish(self, event: Event) -> None:
        for queue in self.listeners:
            queue.put_nowait(event)

    def begin(self, start: dict[str, Any]) -> None:
        self.start = start
        self.publish(("start", start))

    def add(self, text: str) -> None:
        self.parts.append(text)
        for queue in self.listeners:
            queue.put_nowait(("delta", {"text": text}))

    def finish(self, event: Event) -> None:
        self.final = event
        self.publish(event)
        for queue in self.listeners:
            queue.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[Event | None]:
        """A queue of events from now on, preceded by what has happened so far."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if self.start is not None:
            queue.put_nowait(("start", self.start))
        if self.parts:
            queue.put_nowait(("delta", {"text": self.text}))
        if self.final is not None:
            queue.put_nowait(self.final)
            queue.put_nowait(None)
        else:
            self.listeners.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        self.listeners.discard(queue)


class LiveReplies:
    """The replies this process is generating, and their tasks."""

    def __init__(self) -> None:
        self.replies: dict[str, LiveReply] = {}
        self.tasks: set[asyncio.Task] = set()
        self.dirty: set[str] = set()  # replies with text not yet saved

    def get(self, message_id: str) -> LiveReply | None:
        return self.replies.get(message_id)

    def run(self, reply: LiveReply, work) -> asyncio.Task:
        self.replies[reply.message_id] = reply
        task = asyncio.create_task(work, name=f"reply {reply.message_id}")
        self.tasks.add(task)
        task.add_done_callback(lambda t: (self.tasks.discard(t), self.replies.pop(reply.message_id, None)))
        return task

    async def drain(self, timeout: float) -> None:
        """Give running replies ``timeout`` s to finish, then cancel (they save as interrupted)."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
