"""The admin dashboard's figures (SPEC F11): the last hour, minute by minute.

Switch counts come from the audit log and reply latency from the messages
table, so the charts show every instance's traffic, not only this one's. The
flag and its last rollback come from the flag's row; the guard's live window
is this instance's.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.rollout.flags import FLAG
from kynsey.rollout.guard import FAILED, USER_SIDE
from kynsey.storage.models import AuditEntry, Message

if TYPE_CHECKING:
    from kynsey.runtime import Runtime

MINUTE_FORMAT = "%Y-%m-%dT%H:%M"


def _minute(dialect: str, column: Any) -> ColumnElement[str]:
    """The UTC minute of a timestamp as 'YYYY-MM-DDTHH:MM', in the database's own dialect."""
    if dialect == "postgresql":
        utc = func.timezone("UTC", column)
        return func.to_char(func.date_trunc("minute", utc), 'YYYY-MM-DD"T"HH24:MI')
    return func.strftime(MINUTE_FORMAT, column)  # SQLite stores UTC text


def _minutes(now: datetime, count: int) -> list[str]:
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=count - 1)
    return [(start + timedelta(minutes=i)).strftime(MINUTE_FORMAT) for i in range(count)]


async def switch_counts(db: AsyncSession, since: datetime) -> dict[tuple[str, str], int]:
    """(minute, result) -> switch attempts."""
    minute = _minute(db.get_bind().dialect.name, AuditEntry.at)
    stmt = (
        select(minute, AuditEntry.result, func.count())
        .where(AuditEntry.action == "switch", AuditEntry.at >= since)
        .group_by(minute, AuditEntry.result)
    )
    return {(m, r): n for m, r, n in await db.execute(stmt)}


async def ttft_means(db: AsyncSession, since: datetime) -> dict[tuple[str, str], float]:
    """(minute, model) -> mean time to first token (ms) of the replies started that minute."""
    minute = _minute(db.get_bind().dialect.name, Message.created_at)
    stmt = (
        select(minute, Message.model, func.avg(Message.ttft_ms))
        .where(Message.role == "assistant", Message.ttft_ms.is_not(None), Message.created_at >= since)
        .group_by(minute, Message.model)
    )
    return {(m, model or "?"): float(avg) for m, model, avg in await db.execute(stmt)}


def _error_rates(minutes: list[str], switches: dict[str, list[int]]) -> list[float | None]:
    rates: list[float | None] = []
    for i in range(len(minutes)):
        valid = sum(counts[i] for result, counts in switches.items() if result not in USER_SIDE)
        failed = sum(counts[i] for result, counts in switches.items() if result in FAILED)
        rates.append(round(failed / valid, 4) if valid else None)
    return rates


async def dashboard(rt: Runtime, db: AsyncSession, *, minutes: int = 60, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    axis = _minutes(now, minutes)
    since = datetime.strptime(axis[0], MINUTE_FORMAT).replace(tzinfo=UTC)
    index = {m: i for i, m in enumerate(axis)}
    switches: dict[str, list[int]] = defaultdict(lambda: [0] * len(axis))
    for (m, result), n in (await switch_counts(db, since)).items():
        if m in index:
            switches[result][index[m]] += n
    ttft: dict[str, list[float | None]] = defaultdict(lambda: [None] * len(axis))
    for (m, model), mean in (await ttft_means(db, since)).items():
        if m in index:
            ttft[model][index[m]] = round(mean, 1)
    flag = await rt.flags.reload(FLAG)
    return {
        "generated_at": now.isoformat(),
        "minutes": axis,
        "switches": dict(sorted(switches.items())),
        "error_rate": _error_rates(axis, switches),
        "error_rate_limit": rt.settings.guard_max_error_rate,
        "ttft_ms": dict(sorted(ttft.items())),
        "flag": flag.public(),
        "last_rollback": flag.last_rollback,
        "killed": flag.killed,
        "guard": rt.guard.status(),
    }
