"""The SQLite writer leaves its write-ahead log to a checkpointer of its own (``storage/jobs.py``):
no reply's turn pays for copying the log into the database, and the log is still copied."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from sqlalchemy.exc import OperationalError

from kynsey.settings import Settings
from kynsey.storage import jobs as jobs_module
from kynsey.storage.jobs import BACKSTOP_PAGES, SqliteJobs
from kynsey.storage.migrate import upgrade
from tests.conftest import OLLAMA_TIERS
from tests.live import LiveServer
from tests.sse import text_of
from tests.test_chat import new_conversation, send

PAGE = 4096
STANDARD = "llama3.2:3b-instruct-fp16"


def _fill(pages: int):
    """The job: write about ``pages`` pages, in one row per page, then read the writer's autocheckpoint."""

    def job(conn) -> int:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS filler (body BLOB)")
        for _ in range(pages):
            conn.exec_driver_sql("INSERT INTO filler VALUES (randomblob(?))", (PAGE - 200,))
        return conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()

    return job


def _jobs(path: Path) -> SqliteJobs:
    return SqliteJobs(f"sqlite+aiosqlite:///{path}")


def test_the_writer_leaves_the_log_to_the_checkpointer_which_copies_all_of_it(tmp_path):
    path = tmp_path / "k.db"

    async def main() -> None:
        jobs = _jobs(path)
        try:
            autocheckpoint = 0
            for _ in range(3):  # past SQLite's own mark of 1,000 pages, in transactions of their own
                autocheckpoint = await jobs.run(_fill(500))
            assert autocheckpoint == BACKSTOP_PAGES
            database_before = path.stat().st_size
            busy, pages, done = await jobs.checkpoint()
            assert (busy, done) == (0, pages) and pages > 1000  # the writer checkpointed none of it itself
            assert database_before < 1_000_000 < path.stat().st_size  # copied now, by the checkpointer
        finally:
            await jobs.aclose()

    asyncio.run(main())


def test_the_upkeep_loop_checkpoints_on_its_own_and_outlives_a_failing_checkpoint(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(jobs_module, "CHECKPOINT_SECONDS", 0.01)
    path = tmp_path / "k.db"
    calls = []

    async def main() -> None:
        jobs = _jobs(path)
        real = jobs._checkpoint

        def flaky():
            calls.append(1)
            if len(calls) <= 3:  # a disk that refuses for a moment: said once, then tried again
                raise OperationalError("PRAGMA wal_checkpoint(PASSIVE)", None, Exception("disk I/O error"))
            return real()

        monkeypatch.setattr(jobs, "_checkpoint", flaky)
        upkeep = asyncio.create_task(jobs.run_forever())
        try:
            await jobs.run(_fill(1100))
            for _ in range(3000):  # the file grows once the log is copied in; not a timing
                if path.stat().st_size > 1_000_000:
                    break
                await asyncio.sleep(0.01)
            assert path.stat().st_size > 1_000_000
        finally:
            upkeep.cancel()
            await asyncio.gather(upkeep, return_exceptions=True)
            await jobs.aclose()

    with caplog.at_level(logging.ERROR, logger="kynsey.storage.jobs"):
        asyncio.run(main())
    assert len(calls) > 3
    assert [r.getMessage()[:35] for r in caplog.records] == ["checkpointing the SQLite log failed"]



def test_replies_written_while_the_log_is_checkpointed_end_with_their_event_and_keep_every_word(
    tmp_path, monkeypatch, fake_ollama
):
    """The checkpointer copies the log while replies stream, fail half-way (a malformed backend
    line) and are saved: each ends with one terminal event, and the file holds what each showed."""
    monkeypatch.setattr(jobs_module, "CHECKPOINT_SECONDS", 0.005)
    path = tmp_path / "k.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    server = LiveServer(Settings(tiers=OLLAMA_TIERS, ollama_host=fake_ollama.url, database_url=url, data_dir=tmp_path / "data",
                                 status_refresh=0.2, status_timeout=0.5)).start()
    shown: dict[str, tuple[str, str]] = {}
    try:
        server.refresh_status()
        client = server.client(server.add_user("alice", "pro"))
        for n in range(12):
            if n % 3 == 2:
                fake_ollama.fail[STANDARD] = "malformed"
            cid = new_conversation(client)
            evts = send(client, cid, f"turn {n} " + "word " * 60)
            fake_ollama.fail.pop(STANDARD, None)
            assert [name for name, _ in evts].count("done") + [name for name, _ in evts].count("error") == 1
            assert evts[-1][0] == ("error" if n % 3 == 2 else "done"), evts[-1]
            shown[dict(evts)["start"]["message_id"]] = ("interrupted" if n % 3 == 2 else "complete", text_of(evts))
    finally:
        server.stop()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute("SELECT id, status, content FROM messages WHERE role = 'assistant'").fetchall()
    stored = {message_id: (status, content) for message_id, status, content in rows}
    assert stored == shown
