"""Replies being generated in this process, with everyone listening to them.

A reply's generation is independent of any HTTP connection: the browser may
leave and come back (re-attach) while the text keeps arriving and being saved.
A reply stays here after its task ends until its final state is in the
database: while the database is down its text lives only here, so readers and
re-attaching clients are served from memory, and the sweep leaves its row alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

Event = tuple[str, dict[str, Any]]
LINGER_SECONDS = 5.0  # how long a stored reply stays here after its final save


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
    stop_reason: str | None = None  # why its task was cancelled: "stopped" (the user), "shutdown", "database", "refused"
    # Its row's final values once it ended, kept as long as the reply is: a reader that fetched the row
    # just before they were stored still shows them (``LiveReplies.overlay``).
    ended: dict[str, Any] | None = None
    # How many of ``parts`` its row holds, so that a flush sends only what came since; None when a
    # flush failed and the row may or may not hold it (the next flush writes the whole text).
    saved_parts: int | None = 0

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
        """End every listener's stream with ``event``; later calls change nothing."""
        if self.final is not None:
            return
        self.final = event
        self.publish(event)
        for queue in self.listeners:
            queue.put_nowait(None)
        self.listeners.clear()

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
    """The replies this process is generating (or still has to save), and their tasks."""

    def __init__(self) -> None:
        self.replies: dict[str, LiveReply] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self.dirty: set[str] = set()  # replies with text not yet saved
        self.unsaved: dict[str, dict[str, Any]] = {}  # final values the database has not taken yet
        self.stopping = asyncio.Event()  # set when the process begins to shut down

    def get(self, message_id: str) -> LiveReply | None:
        return self.replies.get(message_id)

    def overlay(self, message_id: str) -> dict[str, Any] | None:
        """What this process knows of a reply beyond its row: the text so far, and its final
        state from the moment it ended (before, or instead of, the database having it)."""
        reply = self.replies.get(message_id)
        if reply is None:
            return None
        return {"content": reply.text, **(reply.ended or {})}

    def run(self, reply: LiveReply, work) -> asyncio.Task:
        mid = reply.message_id
        self.replies[mid] = reply
        task = asyncio.create_task(work, name=f"reply {mid}")
        self.tasks[mid] = task
        task.add_done_callback(lambda _t: self._task_done(mid))
        return task

    def _task_done(self, mid: str) -> None:
        self.tasks.pop(mid, None)
        self._forget_when_stored(mid)

    def saved(self, mid: str) -> None:
        """The final state of ``mid`` is in the database."""
        self.unsaved.pop(mid, None)
        self._forget_when_stored(mid)

    def _forget_when_stored(self, mid: str) -> None:
        # Kept a moment longer: a reader that fetched the row just before the final save committed
        # still finds the final state here.
        if mid not in self.tasks and mid not in self.unsaved:
            asyncio.get_running_loop().call_later(LINGER_SECONDS, self._forget, mid)

    def _forget(self, mid: str) -> None:
        if mid not in self.tasks and mid not in self.unsaved:
            self.replies.pop(mid, None)
            self.dirty.discard(mid)

    def cancel(self, mid: str, reason: str) -> bool:
        """Cancel the task writing ``mid`` (its partial text is saved); False if none runs."""
        task, reply = self.tasks.get(mid), self.replies.get(mid)
        if task is None or reply is None or task.done():
            return False
        reply.stop_reason = reason
        task.cancel()
        return True

    async def stop(self, mid: str, wait: float) -> bool:
        """A user's stop of a reply this process writes: cancel it and give its task ``wait`` s
        to save the partial text. False when it is not running here or has ended."""
        reply = self.replies.get(mid)
        # Once its terminal event is out (``final``) a reply has ended, even while its final save runs.
        if reply is None or reply.final is not None or not self.cancel(mid, "stopped"):
            return False
        task = self.tasks.get(mid)
        if task is not None:
            await asyncio.wait({task}, timeout=wait)
        return True

    def stop_all(self, reason: str) -> int:
        """Cancel every running reply (their text is kept); how many were running."""
        return sum(self.cancel(mid, reason) for mid in list(self.tasks))

    async def drain(self, grace: float) -> None:
        """Give running replies ``grace`` s to finish, then cancel them: each is saved
        'interrupted' and its listeners get an error event."""
        self.stopping.set()
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks.values()), timeout=grace)
        for task in pending:
            reply = next((r for mid, r in self.replies.items() if self.tasks.get(mid) is task), None)
            if reply is not None:
                reply.stop_reason = "shutdown"
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
