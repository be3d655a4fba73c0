"""A streaming reply's text reaches its row piece by piece (SPEC N3, N6; issue 14).

Each flush appends only what a reply wrote since its last save (sending the
whole text every 0.25 s cost a 2,000-token reply O(n²) bytes). Appending is not
idempotent, so a flush that fails, possibly after its write reached the
database, makes the next flush write those replies whole: the row never
holds a piece twice and never misses one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from kynsey.chat.conversations import message_public
from kynsey.chat.live import LiveReply
from kynsey.storage.models import Message, as_utc, table
from tests.pg import private_database

MID = "a" * 32


@pytest.fixture
def server(start_server, fake_ollama):
    """The test flushes by itself: the periodic flush waits an hour."""
    return start_server(ollama_host=fake_ollama.url, chat_flush_seconds=3600)


def streaming_reply(server) -> LiveReply:
    """A reply row being written, registered as live in the server's process."""
    token = server.add_user("alice", "pro")
    client = server.client(token)
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]
    now = datetime.now(UTC)
    row = {"id": MID, "conversation_id": cid, "parent_id": None, "seq": 1, "role": "assistant", "content": "",
           "status": "streaming", "created_at": now, "updated_at": now}

    async def begin(rt) -> LiveReply:
        await rt.jobs.run(lambda conn: conn.execute(insert(table(Message)), row))
        live = LiveReply(MID, cid, 1)
        rt.live.replies[MID] = live
        return live

    return server.call(begin)


def write(server, live: LiveReply, *pieces: str) -> None:
    async def work(rt) -> None:
        live.parts.extend(pieces)
        rt.live.dirty.add(MID)

    server.call(work)


def flush_raises(server, error: type[Exception]) -> bool:
    """Whether a flush raised ``error`` (False: it returned)."""

    async def work(rt) -> bool:
        try:
            await rt.replies.flush()
        except error:
            return True
        return False

    return server.call(work)


def flush_and_read(server) -> str:
    async def work(rt) -> str:
        await rt.replies.flush()
        return await rt.jobs.run(lambda conn: conn.execute(select(Message.content).where(Message.id == MID)).scalar())

    return server.call(work)


def test_each_flush_appends_what_came_since_the_last(server):
    live = streaming_reply(server)
    for pieces in (["Hello"], [", ", "wor"], ["ld", "!"]):
        write(server, live, *pieces)
        assert flush_and_read(server) == live.text
    assert flush_and_read(server) == "Hello, world!"  # nothing new: nothing added


class WritesThenFails:
    """Jobs whose next run commits its work and then reports a failure (the answer was lost)."""

    def __init__(self, jobs) -> None:
        self.jobs, self.armed = jobs, True

    async def run(self, job):
        result = await self.jobs.run(job)
        if self.armed:
            self.armed = False
            raise OperationalError("UPDATE messages", {}, ConnectionResetError("the answer was lost"))
        return result


def test_a_flush_that_wrote_but_failed_is_not_appended_twice(server):
    live = streaming_reply(server)
    write(server, live, "one ")
    assert flush_and_read(server) == "one "

    async def arm(rt) -> None:
        rt.replies.jobs = WritesThenFails(rt.replies.jobs)

    server.call(arm)
    write(server, live, "two ")

    assert flush_raises(server, OperationalError)
    assert live.saved_parts is None  # unknown now: the next flush writes it whole
    write(server, live, "three")
    assert flush_and_read(server) == "one two three"


def test_a_reply_that_ended_is_not_flushed_again(server):
    """Its final save holds its whole text; the next flush has nothing to write (it used to append the
    text once more to a row no longer streaming: a statement that changed nothing, per finished reply)."""
    live = streaming_reply(server)
    write(server, live, "all ", "of it")

    async def end_then_flush(rt) -> int:
        live.finish(("done", {}))
        assert await rt.replies.save_final(MID, content=live.text, status="complete")
        return await rt.replies.flush()

    assert server.call(end_then_flush) == 0
    assert flush_and_read(server) == "all of it"


def test_a_row_read_just_before_the_final_save_is_shown_with_the_final_state(server):
    """A reader fetches the row (still 'streaming'), the final save commits, then the reader adds what
    this process knows: the reply, kept a moment in memory for exactly this reader, must bring its
    final state, not only its text (a GET right after 'done' showed the reply still streaming)."""
    live = streaming_reply(server)
    write(server, live, "all ", "of it")

    async def read_save_show(rt) -> dict:
        async with rt.sessions() as db:
            row = await db.get(Message, MID)  # the reader's query, before the save
        live.finish(("done", {}))
        assert await rt.replies.save_final(MID, content=live.text, status="complete", tokens=2)
        assert MID not in rt.live.unsaved  # stored
        return message_public(row, rt.live.overlay(MID))  # the reader's answer, after it

    shown = server.call(read_save_show)
    assert (shown["status"], shown["content"], shown["tokens"]) == ("complete", "all of it", 2)


def test_the_sweep_keeps_this_instances_quiet_replies_and_ends_forgotten_ones(server):
    """A live reply whose backend has sent nothing for longer than ``stream_stale_seconds`` (a model
    loading, a slow first token) is touched by the sweep, not marked orphaned; a 'streaming' row no
    instance writes, untouched as long, is marked interrupted, its text kept."""
    streaming_reply(server)
    forgotten, old = "b" * 32, datetime(2020, 1, 1, tzinfo=UTC)

    async def sweep(rt) -> tuple[int, dict]:
        cid = await rt.jobs.run(lambda conn: conn.execute(select(Message.conversation_id)).scalar())
        row = {"id": forgotten, "conversation_id": cid, "parent_id": None, "seq": 2, "role": "assistant",
               "content": "half", "status": "streaming", "created_at": old, "updated_at": old}
        await rt.jobs.run(lambda conn: conn.execute(insert(table(Message)), row))
        await rt.jobs.run(lambda conn: conn.execute(update(table(Message)).where(Message.id == MID)
                                                    .values(updated_at=old)))
        swept = await rt.replies.sweep()
        rows = await rt.jobs.run(lambda conn: conn.execute(select(Message.id, Message.status, Message.content,
                                                                  Message.updated_at)).all())
        return swept, {r.id: r for r in rows}

    swept, rows = server.call(sweep)
    assert swept == 1
    assert (rows[forgotten].status, rows[forgotten].content) == ("interrupted", "half")
    assert rows[MID].status == "streaming" and as_utc(rows[MID].updated_at) > old


def test_the_sweep_passes_over_rows_another_transaction_holds_so_it_cannot_deadlock(start_server, fake_ollama):
    """On PostgreSQL (SQLite has one writer, so there is no one to wait for): the sweep once touched
    this instance's replies in one order while a flush wrote them in another; each waited on a row the
    other held, PostgreSQL failed the flush, and every streaming reply of the instance ended
    'database_unavailable' (the load balancer test saw it). The sweep now waits on no row: here
    another transaction holds both a live reply and a forgotten one, and the sweep still returns
    (before, it waited for that transaction, which waited for the sweep: the statement timed out),
    passing over both; once they are free, it marks the forgotten one."""
    with private_database("kynsey_sweep") as url:
        server = start_server(ollama_host=fake_ollama.url, database_url=url, chat_flush_seconds=3600,
                              db_statement_timeout=2)
        streaming_reply(server)
        forgotten, old = "b" * 32, datetime(2020, 1, 1, tzinfo=UTC)

        async def sweep_while_held(rt) -> int:
            cid = await rt.jobs.run(lambda conn: conn.execute(select(Message.conversation_id)).scalar())
            await rt.jobs.run(lambda conn: conn.execute(insert(table(Message)), {
                "id": forgotten, "conversation_id": cid, "parent_id": None, "seq": 2, "role": "assistant",
                "content": "half", "status": "streaming", "created_at": old, "updated_at": old}))
            async with rt.engine.connect() as other:
                await other.execute(select(Message.id).with_for_update())  # both rows, until rollback
                swept = await rt.replies.sweep()
                await other.rollback()
            return swept

        assert server.call(sweep_while_held) == 0
        assert server.call(lambda rt: rt.replies.sweep()) == 1
        assert server.call(lambda rt: rt.jobs.run(lambda conn: conn.execute(
            select(Message.status).where(Message.id == forgotten)).scalar())) == "interrupted"


def test_a_flush_that_finds_no_free_connection_keeps_the_text_for_the_next_one(start_server, fake_ollama):
    """No free connection in the pool (``KYNSEY_DB_POOL_TIMEOUT``) is an outage like a database that
    does not answer: the text stays in memory and the next flush saves it. Taken for a refusal, it
    would have given the reply up (its text never saved)."""
    with private_database("kynsey_pool_flush") as url:
        server = start_server(ollama_host=fake_ollama.url, database_url=url, chat_flush_seconds=3600,
                              db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.3)
        live = streaming_reply(server)
        write(server, live, "kept ", "through it")
        held = server.call(lambda rt: rt.engine.connect().start())  # the pool's one connection
        assert flush_raises(server, PoolTimeout)
        server.call(lambda rt: held.close())
        assert flush_and_read(server) == "kept through it"
