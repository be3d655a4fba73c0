"""Hot statements run on the driver's cursor (``storage/prepared.py``) behave as ``Connection.execute``:
the same rows and stored values, the same exceptions, and a lost server drops the pool's connections.

Run on the test run's database (SQLite, or PostgreSQL in the PostgreSQL pass); the outage
test always uses a private PostgreSQL database behind a proxy the test cuts.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from kynsey.storage.db import make_engine
from kynsey.storage.jobs import make_jobs
from kynsey.storage.models import Conversation, Message, User, table
from kynsey.storage.prepared import Prepared
from tests.pg import private_database
from tests.proxy import FaultProxy

CONVERSATIONS = table(Conversation)
MESSAGES = table(Message)
NEW_CONVERSATION = Prepared(insert(CONVERSATIONS).values(
    id=bindparam("cid"), user_id=bindparam("uid"), title=bindparam("title"), created_at=bindparam("at"),
    updated_at=bindparam("at")))
TITLES = Prepared(select(CONVERSATIONS.c.id, CONVERSATIONS.c.title).where(CONVERSATIONS.c.user_id == bindparam("uid"))
                  .order_by(CONVERSATIONS.c.title))
RENAME_UNTITLED = Prepared(  # holds a value of its own (title == "untitled"), beside the bound ones
    update(CONVERSATIONS).where(CONVERSATIONS.c.user_id == bindparam("uid"), CONVERSATIONS.c.title == "untitled")
    .values(title=bindparam("title")))


async def _with_jobs(url: str, work):
    engine = make_engine(url)
    jobs = make_jobs(url, engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(table(User)).values(name=f"u{uuid.uuid4().hex[:8]}", plan="pro", is_admin=False,
                                                          created_at=datetime.now(UTC)))
            uid = (await conn.execute(text("SELECT max(id) FROM users"))).scalar_one()
        return await work(engine, jobs, uid)
    finally:
        await jobs.aclose()
        await engine.dispose()


def test_rows_counts_and_stored_values_match_what_sqlalchemy_reads_back(db_url):
    at = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)

    async def work(engine, jobs, uid):
        def job(conn):
            for title in ("b", "untitled", "a"):
                NEW_CONVERSATION.run(conn, {"cid": uuid.uuid4().hex, "uid": uid, "title": title, "at": at})
            changed = RENAME_UNTITLED.run(conn, {"uid": uid, "title": "c"})
            return changed, TITLES.rows(conn, {"uid": uid})

        changed, rows = await jobs.run(job)
        async with engine.connect() as conn:  # read through SQLAlchemy: the datetime went in as it would have
            stored = (await conn.execute(select(CONVERSATIONS.c.created_at).where(CONVERSATIONS.c.user_id == uid))).scalars()
            return changed, rows, list(stored)

    changed, rows, stored = asyncio.run(_with_jobs(db_url, work))
    assert changed == 1
    assert [r.title for r in rows] == ["a", "b", "c"]  # named columns, in the statement's order
    assert all(len(r.id) == 32 for r in rows)
    assert {s.replace(tzinfo=UTC) for s in stored} == {at}


def test_a_duplicate_is_sqlalchemys_integrity_error_and_the_transaction_writes_nothing(db_url):
    cid = uuid.uuid4().hex

    async def work(engine, jobs, uid):
        values = {"cid": cid, "uid": uid, "title": "t", "at": datetime.now(UTC)}

        def job(conn):
            NEW_CONVERSATION.run(conn, values)
            NEW_CONVERSATION.run(conn, values)

        with pytest.raises(IntegrityError):
            await jobs.run(job)
        return await jobs.read(lambda conn: TITLES.rows(conn, {"uid": uid}))

    assert asyncio.run(_with_jobs(db_url, work)) == []


def test_a_cut_server_is_an_operational_error_and_the_next_job_gets_a_fresh_connection():
    """The pool's other connections died with the server too: none of them is handed out after it."""
    with private_database("kynsey_prepared") as direct, FaultProxy("127.0.0.1", 5432) as proxy:
        url = direct.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")

        async def work(engine, jobs, uid):
            async def both_busy():  # two pooled connections, opened before the cut
                await asyncio.gather(*(jobs.read(lambda c: c.execute(text("SELECT pg_sleep(0.05)"))) for _ in range(2)))

            await both_busy()
            assert engine.pool.checkedin() == 2
            proxy.cut()
            with pytest.raises(OperationalError) as raised:
                await jobs.read(lambda conn: TITLES.rows(conn, {"uid": uid}))
            assert raised.value.connection_invalidated
            proxy.restore()
            return await jobs.read(lambda conn: TITLES.rows(conn, {"uid": uid}))  # not on the other stale one

        assert asyncio.run(_with_jobs(url, work)) == []
