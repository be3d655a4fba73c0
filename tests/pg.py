"""Private PostgreSQL databases for tests and benchmarks (created, migrated, dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.engine import make_url

from kynsey.storage.db import make_engine

ADMIN_URL = os.environ.get("KYNSEY_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def admin_execute(url: str, statement: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def private_database(prefix: str, admin_url: str = ADMIN_URL) -> Iterator[str]:
    """The URL of a new, migrated database on ``admin_url``'s server; dropped afterwards."""
    from kynsey.storage.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_execute(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        asyncio.run(admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
