"""The SQLite writer leaves its write-ahead log to a checkpointer of its own (``storage/jobs.py``):
no reply's turn pays for copying the log into the database, and the log is still copied."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from sqlalchemy.exc import OperationalError

from kynsey.storage import jobs as jobs_module
from kynsey.storage.jobs import BACKSTOP_PAGES, SqliteJobs

PAGE = 4096


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

