"""Alembic environment: reads its URL from Kynsey's settings (or the caller's config)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from kynsey.storage.db import DbLimits, make_engine
from kynsey.storage.models import Base

target_metadata = Base.metadata
# On PostgreSQL one migration runs at a time per database: every instance of a fleet migrates as it
# starts, and two CREATE TABLEs of the same table at once fail one of them.
MIGRATION_LOCK = 0x4B594E53  # any constant; "KYNS"


def _url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from kynsey.settings import Settings

    return Settings().effective_database_url


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends; the version is read after it, so an instance that
            # waited here finds the schema the other one brought up to date, and does nothing.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url(), DbLimits(statement_timeout=3600))  # a migration may take long
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, AsyncConnection):
        raise RuntimeError("pass a sync connection, or none")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())
