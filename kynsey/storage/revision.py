"""Is the database at the newest migration? Answered without importing Alembic.

Alembic and its script directory take a few hundred milliseconds to load; a
CLI command that only lists users should not pay that when nothing needs
migrating (SPEC N7). The head is read from the revision files themselves.
"""

from __future__ import annotations

import asyncio
import re
from functools import cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_ASSIGN = re.compile(r'^(revision|down_revision)\s*=\s*["\']([^"\']+)["\']', re.M)


@cache
def head_revision() -> str:
    """The revision no other revision builds on (the migrations form one chain)."""
    revisions, parents = set(), set()
    for path in VERSIONS.glob("*.py"):
        found = dict(_ASSIGN.findall(path.read_text("utf-8")))
        if "revision" in found:
            revisions.add(found["revision"])
            if "down_revision" in found:
                parents.add(found["down_revision"])
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads ({', '.join(sorted(heads))}); expected one")
    return heads.pop()


async def database_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    async with engine.connect() as conn:
        try:
            return await conn.scalar(text("SELECT version_num FROM alembic_version"))
        except DBAPIError:
            return None  # no alembic_version table yet: a new database


async def ensure_head(engine: AsyncEngine, url: str) -> None:
    """Migrate to the head when the database is behind (Alembic runs in a thread of its own)."""
    if await database_revision(engine) == head_revision():
        return
    from kynsey.storage.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
