"""The plan's migration: users that existed before tiers are mapped to 'standard'."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from sqlalchemy import text

from kynsey.storage.db import make_engine
from kynsey.storage.migrate import downgrade, upgrade
from kynsey.storage.revision import head_revision
from tests.pg import private_database


async def _execute(url: str, *statements: str) -> list:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            rows = []
            for statement in statements:
                result = await conn.execute(text(statement))
                rows = list(result) if result.returns_rows else rows
            return rows
    finally:
        await engine.dispose()


def _back_to(database_url: str, revision: str, *inserts: str) -> None:
    """Take the run's database back to ``revision``, holding only the users and tokens ``inserts`` add."""
    downgrade(database_url, revision)
    asyncio.run(_execute(database_url, "DELETE FROM api_tokens", "DELETE FROM users", *inserts))


def test_existing_users_are_mapped_to_standard(database_url):
    # Work on the run's database: take it back to before plans existed, add users, upgrade.
    try:
        _back_to(
            database_url,
            "0001_initial_users",
            "INSERT INTO users (name, password_hash, is_admin, created_at) VALUES "
            "('old-ann', NULL, false, CURRENT_TIMESTAMP), ('old-bob', NULL, true, CURRENT_TIMESTAMP)",
        )
        upgrade(database_url, "0002_user_plan")
        rows = asyncio.run(_execute(database_url, "SELECT name, plan FROM users ORDER BY name"))
        assert [tuple(r) for r in rows] == [("old-ann", "standard"), ("old-bob", "standard")]
    finally:
        upgrade(database_url)
    rows = asyncio.run(_execute(database_url, "SELECT name, plan, active_tier FROM users ORDER BY name"))
    assert [tuple(r) for r in rows] == [("old-ann", "standard", None), ("old-bob", "standard", None)]
    asyncio.run(_execute(database_url, "DELETE FROM users"))


def test_account_lifecycle_migration_keeps_tokens_working_and_never_reuses_their_ids(database_url):
    """0007 adds token names, last use and expiry, and disabled accounts; old tokens keep working."""
    try:
        _back_to(
            database_url,
            "0006_audit_tier_width",
            "INSERT INTO users (name, password_hash, is_admin, created_at, plan) VALUES "
            "('old-ann', NULL, false, CURRENT_TIMESTAMP, 'standard')",
            "INSERT INTO api_tokens (user_id, token_hash, created_at) "
            "SELECT id, 'digest-1', CURRENT_TIMESTAMP FROM users WHERE name = 'old-ann'",
        )
        upgrade(database_url)
        rows = asyncio.run(
            _execute(
                database_url,
                "SELECT t.name, t.last_used_at, t.expires_at, u.disabled_at FROM api_tokens t JOIN users u ON u.id = t.user_id",
            )
        )
        assert [tuple(r) for r in rows] == [("", None, None, None)]
        first = asyncio.run(_execute(database_url, "SELECT id FROM api_tokens"))[0][0]
        rows = asyncio.run(
            _execute(
                database_url,
                "DELETE FROM api_tokens",
                "INSERT INTO api_tokens (user_id, token_hash, created_at, name) "
                "SELECT id, 'digest-2', CURRENT_TIMESTAMP, 'new' FROM users WHERE name = 'old-ann'",
                "SELECT id FROM api_tokens",
            )
        )
        assert rows[0][0] != first  # a revoked token's id is not handed out again
    finally:
        upgrade(database_url)
        asyncio.run(_execute(database_url, "DELETE FROM users"))


def test_existing_conversations_become_a_linear_chain_of_messages(database_url):
    """0009: each message's parent is the one before it; the last one is the shown leaf."""
    columns = "(id, conversation_id, seq, role, content, status, created_at, updated_at)"
    rows = [("u1", 1, "user", "hi"), ("a1", 2, "assistant", "hello"), ("u2", 3, "user", "more"), ("a2", 4, "assistant", "sure")]
    try:
        _back_to(
            database_url,
            "0008_upgrade_requests",
            "INSERT INTO users (name, is_admin, created_at, plan) VALUES ('old-ann', false, CURRENT_TIMESTAMP, 'standard')",
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at) "
            "SELECT c, id, 't', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM users, (SELECT 'c1' AS c UNION SELECT 'c2') AS ids",
            *(f"INSERT INTO messages {columns} VALUES ('{mid}', 'c1', {seq}, '{role}', '{text}', 'complete', "
              "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)" for mid, seq, role, text in rows),
        )
        upgrade(database_url)
        chain = asyncio.run(_execute(database_url, "SELECT id, parent_id FROM messages ORDER BY seq"))
        assert [tuple(r) for r in chain] == [("u1", None), ("a1", "u1"), ("u2", "a1"), ("a2", "u2")]
        leaves = asyncio.run(_execute(database_url, "SELECT id, current_leaf_id FROM conversations ORDER BY id"))
        assert [tuple(r) for r in leaves] == [("c1", "a2"), ("c2", None)]  # an empty one has no leaf
        downgrade(database_url, "0008_upgrade_requests")  # and back: the messages stay
        assert len(asyncio.run(_execute(database_url, "SELECT id FROM messages"))) == 4
    finally:
        upgrade(database_url)
        asyncio.run(_execute(database_url, "DELETE FROM users"))


def test_instances_started_together_on_a_new_postgresql_migrate_it_once(tmp_path):
    """Several instances of a fleet started at once each migrate at start (``kynsey serve``), or an
    operator runs ``kynsey db upgrade`` while one starts: each waits for the one migrating, then finds
    the schema current. (SQLite serves one instance, whose processes migrate once, before forking.)"""
    with private_database("kynsey_migrate") as url:
        downgrade(url, "base")
        env = {**os.environ, "KYNSEY_DATABASE_URL": url, "KYNSEY_DATA_DIR": str(tmp_path)}
        upgrades = [subprocess.Popen([sys.executable, "-m", "kynsey.cli", "db", "upgrade"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                    for _ in range(4)]
        outputs = [(proc.wait(timeout=120), proc.stdout.read()) for proc in upgrades if proc.stdout]
        assert [code for code, _ in outputs] == [0, 0, 0, 0], "\n".join(out[-2000:] for _, out in outputs)
        version = asyncio.run(_execute(url, "SELECT version_num FROM alembic_version"))
        assert [tuple(r) for r in version] == [(head_revision(),)]
