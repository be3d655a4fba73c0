"""Live replies across instances, through Redis pub/sub (SPEC N5; ``kynsey/cluster.py``).

A client re-attaching through an instance that is not writing the reply
follows it here: the follower subscribes to the reply's channel and asks on
the control channel who writes it ("watch"); the writer answers by publishing
the text so far and then every delta as it is produced, each with its offset
in the text (``at``), then the terminal event. A writer publishes only replies
someone watches, and at most one message per ``BATCH_SECONDS`` holding every
delta since the last, never a round trip per token.

A stop asked through another instance goes the same way: the writer stops the
reply and answers the asking instance with what it knows of the reply.

Without Redis, or when it fails, ``follow`` and ``stop_elsewhere`` answer None
and the caller falls back to the database (``chat/sse.py`` polls it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from kynsey.chat.live import Event, LiveReplies, LiveReply
from kynsey.cluster import Cluster, Feed, Unavailable

log = logging.getLogger(__name__)
FIRST_ANSWER_SECONDS = 1.0  # how long a follower waits for the writer to answer its watch
STOP_ANSWER_SECONDS = 5.0  # how long a stop through another instance waits for the writer
# A followed reply's deltas go out at most this often, each message holding every delta since the last:
# a relayed token costs no round trip of its own, and a follower lags the writer by no more than this.
BATCH_SECONDS = 0.05
SYNC: Event = ("sync", {})  # asks a publisher to send the text so far (a new follower came)


class ReplyRelay:
    def __init__(self, cluster: Cluster, live: LiveReplies, *, final_save_wait: float) -> None:
        self.cluster = cluster
        self.live = live
        self.final_save_wait = final_save_wait
        self._publishers: dict[str, asyncio.Queue] = {}  # reply id -> its publisher's queue
        self._answers: dict[str, asyncio.Future] = {}  # stop request id -> the writer's answer
        self._tasks: set[asyncio.Task] = set()
        cluster.on("control", self._control)
        cluster.on(f"to:{cluster.instance}", self._answer)

    # -- following a reply another instance writes ------------------------------------

    async def follow(self, message_id: str) -> Feed | None:
        """A feed of the reply's events from its writer, starting with the text so far;
        None when there is no Redis, it fails, or no writer answered."""
        try:
            feed = await self.cluster.follow(f"reply:{message_id}")
        except Unavailable:
            return None
        try:
            await self.cluster.publish_now("control", {"op": "watch", "mid": message_id})
            answered = await feed.wait(FIRST_ANSWER_SECONDS) and not feed.broken()
        except Unavailable:
            answered = False
        if not answered:
            await feed.close()
            return None
        return feed

    # -- stopping a reply another instance writes -------------------------------------

    async def stop_elsewhere(self, message_id: str, user_id: int, conversation_id: str) -> dict[str, Any] | None:
        """Ask the instance writing ``message_id`` to stop it: its answer ``{"stopped", "overlay"}``,
        or None when no instance answers (none writes it, or Redis is off or failing)."""
        request = uuid.uuid4().hex
        future = self._answers[request] = asyncio.get_running_loop().create_future()
        try:
            await self.cluster.publish_now("control", {"op": "stop", "mid": message_id, "user": user_id,
                                                       "conversation": conversation_id, "request": request,
                                                       "to": self.cluster.instance})
            async with asyncio.timeout(STOP_ANSWER_SECONDS):
                return await future
        except (Unavailable, TimeoutError):
            return None
        finally:
            self._answers.pop(request, None)

    def _answer(self, message: dict) -> None:
        future = self._answers.get(message.get("request", ""))
        if future is not None and not future.done():
            future.set_result(message)

    # -- the writer's side ------------------------------------------------------------

    def _control(self, message: dict) -> None:
        reply = self.live.get(str(message.get("mid", "")))
        if reply is None:
            return  # another instance writes it (or nobody does any more)
        if message.get("op") == "watch":
            queue = self._publishers.get(reply.message_id)
            if queue is not None:
                queue.put_nowait(SYNC)
            else:
                self._spawn(self._publish(reply), f"relay {reply.message_id}")
        elif message.get("op") == "stop":
            self._spawn(self._stop(reply, message), f"stop {reply.message_id}")

    def _spawn(self, work, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, reply: LiveReply) -> None:
        """Send the reply's events to its channel until its terminal event: each message is the
        batch that queued up while the previous one was on its way."""
        mid, channel = reply.message_id, f"reply:{reply.message_id}"
        queue = self._publishers[mid] = reply.subscribe()
        sent, ended = 0, False
        try:
            batch: list[Any] = [("delta", {"at": 0, "text": ""})]  # the answer to the watch, whatever comes next
            while not ended:
                while not queue.empty():
                    batch.append(queue.get_nowait())
                events: list[Any] = []
                for item in batch:
                    if item is None:
                        ended = True
                    elif item is SYNC:
                        events.append(("delta", {"at": 0, "text": reply.text[:sent]}))
                    elif item[0] == "delta":
                        text = item[1]["text"]
                        events.append(("delta", {"at": sent, "text": text}))
                        sent += len(text)
                    else:
                        events.append(item)
                if events:
                    await self.cluster.publish_now(channel, events)
                if not ended:
                    batch = [await queue.get()]
                    if batch[0] is not None:
                        await asyncio.sleep(BATCH_SECONDS)  # let the next few tokens join this message
        except Unavailable:
            pass  # followers see their feed break and fall back to the database
        finally:
            reply.unsubscribe(queue)
            if self._publishers.get(mid) is queue:
                del self._publishers[mid]

    async def _stop(self, reply: LiveReply, message: dict) -> None:
        if reply.user_id != message.get("user") or reply.conversation_id != message.get("conversation"):
            return  # not theirs: answer nothing, as if no instance wrote it
        stopped = await self.live.stop(reply.message_id, self.final_save_wait + 1)
        answer = {"request": message.get("request"), "stopped": stopped, "overlay": self.live.overlay(reply.message_id)}
        try:
            await self.cluster.publish_now(f"to:{message.get('to')}", answer)
        except Unavailable:
            pass  # the asking instance answers 409 after its wait

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
