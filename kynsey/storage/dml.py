"""Statements that change rows, and how many rows they changed."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import UpdateBase


async def rows_changed(db: AsyncSession, statement: UpdateBase) -> int:
    """Run an UPDATE or DELETE in ``db`` and say how many rows it matched."""
    result = cast("CursorResult[Any]", await db.execute(statement))
    return result.rowcount or 0


def write_together(dialect: str, *statements: UpdateBase) -> list[Executable]:
    """``statements``, to run in order with one set of parameters, as one statement where the database can.

    On PostgreSQL the first ones become data-modifying WITH clauses of the last: one round
    trip, atomic without a transaction around it (``Jobs.write``); they see the same snapshot,
    so none may read what another writes (constraints are checked once all have run).
    Elsewhere they stay apart, to run one after another in the job's transaction.
    """
    if dialect != "postgresql":
        return list(statements)
    *first, last = statements
    return [last.add_cte(*(s.cte(f"write_{n}") for n, s in enumerate(first))) if first else last]
