"""N2: the database work on a reply's path to its first token, in-process, on SQLite and PostgreSQL.

    python -m bench.db_bench [--db sqlite,postgres] [--requests 300]

Times the two jobs every chat request runs before the backend is called, through
Kynsey's own job runner (``storage/jobs.py``) on a fresh database:

- the caller lookup (``caller_by_token``, what ``KYNSEY_AUTH_CACHE_SECONDS`` keeps);
- a conversation's turn (``begin_turn``: the ownership and history read, then the
  user's message and the streaming reply written in one statement; on PostgreSQL
  one statement that does both), each in a conversation created beforehand, the
  way the chat benchmark sends them;

and, as baselines, one ``SELECT 1`` round trip through the same runner, and one committed
INSERT of a small row straight on the driver (asyncpg, sqlite3) with Kynsey's settings: the
least a turn that commits before the backend is called can cost on this machine (on
PostgreSQL, the commit waits for its write-ahead log to reach the disk). p50 and p99 of
each, with the 1-minute load average. ``bench/chat_bench.py`` measures the same work from
outside, inside the whole request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.common import percentile, report
from kynsey.accounts.secrets import token_digest
from kynsey.accounts.tokens import caller_by_token
from kynsey.chat.store import Turn, begin_turn, create_conversation
from kynsey.storage.db import SQLITE_PRAGMAS, make_engine
from kynsey.storage.jobs import Jobs, make_jobs
from kynsey.storage.migrate import upgrade
from tests.pg import private_database

TOKEN = "bench-token"


async def timed(requests: int, make: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """p50 and p99 in ms of ``requests`` runs of ``make()``, after 20 to warm up."""
    times = []
    for n in range(requests + 20):
        started = time.perf_counter()
        await make()
        if n >= 20:
            times.append((time.perf_counter() - started) * 1000)
    return percentile(times, 50), percentile(times, 99)


async def measure(url: str, requests: int) -> list[tuple[str, float, float]]:
    engine = make_engine(url)
    jobs: Jobs = make_jobs(url, engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO users (name, plan, is_admin, created_at) "
                                    "VALUES ('bench', 'pro', false, CURRENT_TIMESTAMP)"))
            user_id = (await conn.execute(text("SELECT id FROM users WHERE name = 'bench'"))).scalar_one()
            await conn.execute(text("INSERT INTO api_tokens (user_id, name, token_hash, created_at, last_used_at) "
                                    "VALUES (:user, 'bench', :digest, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                               {"user": user_id, "digest": token_digest(TOKEN)})

        turns: list[float] = []

        async def turn() -> None:
            cid = uuid.uuid4().hex  # created before the clock starts, as in the chat benchmark
            await jobs.write(create_conversation(cid, user_id, "bench", datetime.now(UTC)))
            job = begin_turn(Turn(conversation_id=cid, user_id=user_id, reply_id=uuid.uuid4().hex, tier="standard",
                                  model="m", at=datetime.now(UTC), content="hi", asked_id=uuid.uuid4().hex,
                                  title="bench"))
            started = time.perf_counter()
            await jobs.write(job)
            turns.append((time.perf_counter() - started) * 1000)

        for _ in range(requests + 20):
            await turn()
        turns = turns[20:]
        return [
            ("one round trip (SELECT 1)", *await timed(requests, lambda: jobs.read(lambda c: c.execute(text("SELECT 1"))))),
            ("caller lookup (token)", *await timed(requests, lambda: jobs.read(caller_by_token(TOKEN)))),
            ("turn (a new question: on PostgreSQL one statement, else a read and a write)", percentile(turns, 50), percentile(turns, 99)),
            ("one committed INSERT straight on the driver", *await driver_commit(url, requests)),
        ]
    finally:
        await jobs.aclose()
        await engine.dispose()


async def driver_commit(url: str, requests: int) -> tuple[float, float]:
    """p50 and p99 of one INSERT committed on its own, on the bare driver: no pool, no SQLAlchemy, no thread."""
    parsed = make_url(url)
    create = "CREATE TABLE bench_commits (body TEXT NOT NULL)"
    insert = "INSERT INTO bench_commits (body) VALUES ('hi')"
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database, isolation_level=None)  # autocommit: each INSERT commits
        try:
            for pragma in SQLITE_PRAGMAS:
                conn.execute(f"PRAGMA {pragma}")
            conn.execute(create)

            async def commit() -> None:
                conn.execute(insert)

            return await timed(requests, commit)
        finally:
            conn.close()
    pg = await asyncpg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await pg.execute(create)
        return await timed(requests, lambda: pg.execute(insert))
    finally:
        await pg.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = [("machine", f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} before the run")]
    for db in args.db.split(","):
        with contextlib.ExitStack() as stack:
            if db == "postgres":
                url = stack.enter_context(private_database("kynsey_dbbench"))
            else:
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="kynsey-dbbench-"))
                url = f"sqlite+aiosqlite:///{Path(folder) / 'kynsey.db'}"
                upgrade(url)
            for what, p50, p99 in asyncio.run(measure(url, args.requests)):
                rows.append((f"[{db}] {what} p50 / p99", f"{p50:.3f} / {p99:.3f} ms  (load {os.getloadavg()[0]:.2f})"))
    report(rows)


if __name__ == "__main__":
    main()
