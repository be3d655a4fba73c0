"""The audit trail is tamper-evident and exportable (SPEC F9), checked with the real CLI."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

import kynsey
from kynsey.audit.log import entry_fields, entry_hash
from kynsey.storage.db import make_engine
from kynsey.storage.models import AuditEntry


def run_cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KYNSEY_DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "kynsey.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def sql(db_url: str, statement: str, **params) -> None:
    """Tamper with the database behind Kynsey's back, through the test's own engine."""

    async def work() -> None:
        engine = make_engine(db_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(statement), params)
        finally:
            await engine.dispose()

    asyncio.run(work())


SETUP = 6  # make_history's three users are each audited twice: user_add and token_issue
BOSS = 2  # so is the admin some tests add afterwards


def make_history(server) -> int:
    """Three users (entries 1-6), then ten entries of several kinds (SETUP + 1-10); returns how many."""
    admin = server.client(server.add_user("root", "pro", admin=True))
    alice = server.client(server.add_user("alice", "pro"))
    sam = server.client(server.add_user("sam", "standard"))
    for tier in ("pro", "code", "standard", "code"):
        assert alice.post("/api/models/tier", json={"tier": tier}).status_code == 200
    assert sam.post("/api/models/tier", json={"tier": "pro"}).status_code == 403
    assert sam.post("/api/models/tier", json={"tier": "ultra"}).status_code == 404
    admin.put("/api/admin/flags/model_switching", json={"percent": 50})
    admin.put("/api/admin/flags/model_switching", json={"state": "on"})
    assert admin.put("/api/admin/users/sam/plan", json={"plan": "pro"}).status_code == 200
    assert sam.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    return SETUP + 10


def test_an_untouched_chain_verifies(server, db_url):
    count = make_history(server)
    done = run_cli(db_url, "audit", "verify")
    assert (done.returncode, done.stdout.strip()) == (0, f"chain intact: {count} entries")
    resp = server.client(server.add_user("boss", "pro", admin=True)).get("/api/admin/audit/verify")
    assert resp.json() == {"ok": True, "entries": count + BOSS, "bad_id": None, "problem": None,
                           "message": f"chain intact: {count + BOSS} entries"}


def test_an_altered_entry_is_named(server, db_url):
    make_history(server)
    sql(db_url, f"UPDATE audit_log SET result = 'ready' WHERE id = {SETUP + 5}")  # hide sam's refusal
    done = run_cli(db_url, "audit", "verify")
    assert done.returncode == 1
    assert done.stdout.startswith(f"chain broken at entry {SETUP + 5} (altered)"), done.stdout
    sql(db_url, f"UPDATE audit_log SET result = 'denied' WHERE id = {SETUP + 5}")
    assert run_cli(db_url, "audit", "verify").returncode == 0  # putting it back mends the chain


def test_a_removed_middle_entry_is_named(server, db_url):
    make_history(server)
    gone = SETUP + 6
    sql(db_url, f"DELETE FROM audit_log WHERE id = {gone}")
    done = run_cli(db_url, "audit", "verify")
    assert done.returncode == 1
    assert done.stdout.startswith(f"chain broken at entry {gone} (removed): entry {gone} removed: entry {gone + 1} links"), done.stdout


def test_a_rewritten_entry_with_a_recomputed_hash_is_still_caught(server, db_url):
    make_history(server)

    async def forged_hash(rt) -> str:
        async with rt.sessions() as db:
            entry = await db.get(AuditEntry, SETUP + 3)
            return entry_hash(entry.prev_hash, entry.at, {**entry_fields(entry), "to_tier": "pro"})

    sql(db_url, f"UPDATE audit_log SET to_tier = 'pro', hash = :h WHERE id = {SETUP + 3}", h=server.call(forged_hash))
    done = run_cli(db_url, "audit", "verify")
    assert done.returncode == 1
    assert done.stdout.startswith(f"chain broken at entry {SETUP + 3} (rewritten)"), done.stdout


def test_cli_exports_json_lines_and_csv_with_filters(server, db_url, tmp_path: Path):
    count = make_history(server)
    out = tmp_path / "all.jsonl"
    done = run_cli(db_url, "audit", "export", "--format", "jsonl", "--output", str(out))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(1, count + 1))
    assert rows[1]["prev_hash"] == rows[0]["hash"] and rows[0]["at"].endswith("+00:00")

    done = run_cli(db_url, "audit", "export", "--format", "csv", "--user", "sam", "--action", "switch")
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(done.stdout.splitlines()))
    assert [(r["subject"], r["result"], r["to_tier"]) for r in table] == [
        ("sam", "denied", "pro"), ("sam", "unknown_tier", "ultra"), ("sam", "ready", "pro")
    ]
    done = run_cli(db_url, "audit", "export", "--result", "ready", "--tier", "code")
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [SETUP + 2, SETUP + 3, SETUP + 4]  # to or from Code

    first = rows[0]["at"][:19]  # whole seconds, no zone: read as UTC
    done = run_cli(db_url, "audit", "export", "--until", first)
    assert done.returncode == 0 and done.stdout == ""
    done = run_cli(db_url, "audit", "export", "--since", first)
    assert len(done.stdout.splitlines()) == count
    assert run_cli(db_url, "audit", "export", "--format", "xml").returncode == 2
    done = run_cli(db_url, "audit", "export", "--since", "0001-01-01T00:00:00+05:00")  # year 0 in UTC
    assert done.returncode == 2 and "error: --since and --until must be" in done.stderr, done.stderr


def test_the_admin_api_streams_an_export(server):
    count = make_history(server)
    admin = server.client(server.add_user("boss", "pro", admin=True))
    resp = admin.get("/api/admin/audit/export", params={"format": "csv"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert resp.headers["content-disposition"] == 'attachment; filename="kynsey-audit.csv"'
    table = list(csv.DictReader(resp.text.splitlines()))
    assert len(table) == count + BOSS and table[0]["prev_hash"] == "0" * 64 and table[1]["prev_hash"] == table[0]["hash"]
    assert json.loads(table[SETUP + 6]["details"])["to"] == {"state": "percentage", "percent": 50.0, "allow": []}
    resp = admin.get("/api/admin/audit/export", params={"action": "flag", "user": "root"})
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    assert [(r["action"], r["details"]["to"]["state"]) for r in lines] == [("flag", "percentage"), ("flag", "on")]
    later = admin.get("/api/admin/audit/export", params={"since": "2999-01-01T00:00:00"})
    assert later.status_code == 200 and later.text == ""
    assert admin.get("/api/admin/audit/export", params={"format": "xml"}).status_code == 422
    alice = server.client(server.add_user("alice2", "pro"))
    assert alice.get("/api/admin/audit/export").status_code == 403


def test_no_code_path_updates_or_deletes_audit_rows():
    """Kynsey only ever appends: no UPDATE or DELETE of audit_log anywhere in the package."""
    package = Path(kynsey.__file__).parent
    writes = re.compile(
        r"(update|delete)\(\s*AuditEntry|(UPDATE|DELETE\s+FROM)\s+audit_log|AuditEntry\.__table__\.(update|delete)",
        re.IGNORECASE,
    )
    offenders = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if writes.search(line)
    ]
    assert offenders == []
