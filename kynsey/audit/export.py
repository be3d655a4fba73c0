"""Export the audit trail as JSON lines or CSV (SPEC F9).

Rows stream oldest first in batches, so an export of any size runs in
constant memory; the CLI writes them to a file and the admin API streams them
to the browser. Every column is exported, hashes included, so an exported copy
can be checked against the live chain later.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession

from kynsey.audit.query import AuditFilter, entry_public, stream_all
from kynsey.errors import InvalidRequest
from kynsey.storage.models import AuditEntry, iso_utc

FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
COLUMNS = (
    "id", "at", "actor", "action", "subject", "from_tier", "to_tier", "result",
    "reason", "latency_ms", "request_id", "details", "prev_hash", "hash",
)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidRequest(f"export format is one of {', '.join(FORMATS)}, not '{fmt}'", field="format")
    return fmt


def _row(entry: AuditEntry) -> dict:
    row = entry_public(entry)
    row["at"] = iso_utc(entry.at)
    return row


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    """A text cell a spreadsheet would read as a formula gets a leading apostrophe; the text stays legible."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def _csv_line(values: list) -> str:
    out = io.StringIO()
    # RFC 4180's CRLF: only then does the writer quote a value holding a lone CR, which would split its row.
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def format_entry(entry: AuditEntry, fmt: str) -> str:
    row = _row(entry)
    if fmt == "jsonl":
        return json.dumps(row, ensure_ascii=False) + "\n"
    row["details"] = json.dumps(row["details"], sort_keys=True) if row["details"] is not None else ""
    return _csv_line(["" if row[c] is None else _cell(row[c]) for c in COLUMNS])


async def export_chunks(
    db: AsyncSession, where: AuditFilter, fmt: str, *, chunk_bytes: int = 64 * 1024
) -> AsyncIterator[str]:
    """The export as text chunks of about ``chunk_bytes``: a CSV header first, then one line per entry."""
    check_format(fmt)
    parts: list[str] = [_csv_line(list(COLUMNS))] if fmt == "csv" else []
    size = sum(map(len, parts))
    async for entry in stream_all(db, where):
        line = format_entry(entry, fmt)
        parts.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield "".join(parts)
            parts, size = [], 0
    if parts:
        yield "".join(parts)
