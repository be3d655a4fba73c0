"""Statements that change rows, and how many rows they changed."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import UpdateBase


async def rows_changed(db: AsyncSession, statement: UpdateBase) -> int:
    """Run an UPDATE or DELETE in ``db`` and say how many rows it matched."""
    result = cast("CursorResult[Any]", await db.execute(statement))
    return result.rowcount or 0
