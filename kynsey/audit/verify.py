"""Check the audit chain end to end (SPEC F9).

Each entry's hash covers its fields and the previous entry's hash. Walking
the chain from the first entry:

- an entry whose content no longer matches its own hash was **altered**;
- an entry whose ``prev_hash`` is not the hash of the entry before it follows
  a **removal**: the missing ids name what was removed. (Ids alone prove
  nothing: a rolled-back insert on PostgreSQL skips an id, and the chain still
  links across it.) With no id missing, the entry before it was rewritten
  with a recomputed hash.

The first problem found is reported. Removing entries from the very end of the
log leaves no trace in the chain itself; keep exported copies to catch that.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.audit.log import GENESIS, entry_fields, entry_hash
from kynsey.audit.query import AuditFilter, stream_all
from kynsey.storage.models import AuditEntry


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    entries: int  # entries checked before the first problem (all of them when ok)
    bad_id: int | None = None
    problem: str | None = None  # altered | removed | rewritten
    detail: str = ""

    @property
    def message(self) -> str:
        if self.ok:
            return f"chain intact: {self.entries} entries"
        return f"chain broken at entry {self.bad_id} ({self.problem}): {self.detail}"

    def public(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "bad_id": self.bad_id, "problem": self.problem,
                "message": self.message}


def _broken_link(entry: AuditEntry, prev_id: int | None, checked: int) -> ChainReport:
    first_missing = (prev_id or 0) + 1
    if entry.id > first_missing:
        gone = f"entry {first_missing}" if entry.id - first_missing == 1 else f"entries {first_missing}-{entry.id - 1}"
        return ChainReport(
            False, checked, first_missing, "removed",
            f"{gone} removed: entry {entry.id} links to a hash no remaining entry has",
        )
    if prev_id is None:
        return ChainReport(False, checked, entry.id, "altered", f"entry {entry.id} does not start the chain")
    return ChainReport(
        False, checked, prev_id, "rewritten",
        f"entry {prev_id} was rewritten with a recomputed hash: entry {entry.id} no longer links to it",
    )


async def verify_chain(db: AsyncSession) -> ChainReport:
    """Walk the whole log, oldest first; report the first altered or removed entry."""
    prev_hash, prev_id, checked = GENESIS, None, 0
    async for entry in stream_all(db, AuditFilter()):
        if entry.prev_hash != prev_hash:
            return _broken_link(entry, prev_id, checked)
        if entry_hash(entry.prev_hash, entry.at, entry_fields(entry)) != entry.hash:
            return ChainReport(
                False, checked, entry.id, "altered", f"entry {entry.id}'s content does not match its hash"
            )
        prev_hash, prev_id = entry.hash, entry.id
        checked += 1
    return ChainReport(True, checked)
