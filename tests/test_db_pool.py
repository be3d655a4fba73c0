"""Out of database connections is a 503 ``database_busy`` with Retry-After, never a 500 (issue 12 item 4).

Two ways to run out, both on a private PostgreSQL database: this instance's pool
(``KYNSEY_DB_POOL_SIZE`` + ``KYNSEY_DB_MAX_OVERFLOW``) has none free within
``KYNSEY_DB_POOL_TIMEOUT``, or PostgreSQL refuses a new one (``too many
clients``: here a role's ``CONNECTION LIMIT``, the same refusal as past
``max_connections``). Either way the instance recovers as soon as a connection
is free again.

A transaction that PostgreSQL rolls back to break a conflict (a deadlock, a
serialization failure) answers the same 503 ``database_busy``: nothing of it was
written, and trying again passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from kynsey.settings import Settings
from tests.conftest import OLLAMA_TIERS
from tests.live import LiveServer, eventually
from tests.pg import ADMIN_URL, admin_execute, private_database
from tests.test_chat import new_conversation, send

ROUTES = [("GET", "/api/conversations", None), ("GET", "/api/auth/me", None),
          ("POST", "/api/conversations", {"title": "x"}), ("GET", "/api/models/tiers", None)]


@contextlib.contextmanager
def kynsey_server(database_url: str, tmp_path: Path, ollama_host: str = "http://127.0.0.1:9",
                  **limits) -> Iterator[LiveServer]:
    # auth_cache_seconds=0: every request looks its caller up, so that lookup meets the busy database too
    # (a caller kept in memory would answer /api/auth/me without it).
    settings = Settings(tiers=OLLAMA_TIERS, database_url=database_url, data_dir=tmp_path / "data",
                        ollama_host=ollama_host, status_refresh=60, auth_cache_seconds=0, **limits)
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


def hold_a_connection(server: LiveServer):
    """Check a connection out of the server's own pool and keep it (on the server's loop)."""
    return server.call(lambda rt: rt.engine.connect().start())


def check_busy(client: httpx.Client, words: str) -> None:
    for method, path, body in ROUTES:
        resp = client.request(method, path, json=body)
        assert resp.status_code == 503, (method, path, resp.status_code, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "database_busy" and words in error["message"], (method, path, error)
        assert resp.headers["retry-after"] == "1"


def test_an_exhausted_pool_answers_503_database_busy_and_recovers(tmp_path):
    with private_database("kynsey_pool") as url, kynsey_server(
        url, tmp_path, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.5
    ) as server:
        client = server.client(add_user_directly(url, "alice"))
        eventually(lambda: client.get("/api/conversations").status_code == 200, "a first answer")
        held = eventually(lambda: _hold_or_none(server), "the pool's one connection held")
        check_busy(client, "every database connection of this instance is in use")
        server.call(lambda rt: held.close())
        eventually(lambda: client.get("/api/conversations").status_code == 200, "recovery")


@contextlib.contextmanager
def limited_role(database_url: str, limit: int) -> Iterator[str]:
    """A role that may hold ``limit`` connections, with every right on the database's tables; its URL."""
    role = f"kynsey_limited_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_execute(ADMIN_URL, f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {limit}'))
    try:
        for grant in ("TABLES", "SEQUENCES"):
            asyncio.run(admin_execute(database_url, f'GRANT ALL ON ALL {grant} IN SCHEMA public TO "{role}"'))
        yield make_url(database_url).set(username=role, password=None).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin_execute(database_url, f'DROP OWNED BY "{role}"'))  # its grants, so the role can go
        asyncio.run(admin_execute(ADMIN_URL, f'DROP ROLE IF EXISTS "{role}"'))


def test_too_many_clients_answers_503_database_busy_and_recovers(tmp_path):
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(private_database("kynsey_pool"))
        role_url = stack.enter_context(limited_role(url, limit=1))
        token = add_user_directly(url, "alice")
        server = stack.enter_context(kynsey_server(role_url, tmp_path, db_pool_size=1, db_max_overflow=1))
        client = server.client(token)
        # (Background work may hold the role's one connection a moment: then this very refusal answers.)
        eventually(lambda: client.get("/api/conversations").status_code == 200, "a first answer")
        # The role's one connection is held: the pool's overflow asks PostgreSQL for a second, which refuses it.
        held = eventually(lambda: _hold_or_none(server), "the role's one connection held")
        check_busy(client, "too many clients")
        server.call(lambda rt: held.close())
        eventually(lambda: client.get("/api/conversations").status_code == 200, "recovery")


CONFLICT_ON = [  # PostgreSQL's own deadlock error, raised where a real one would strike
    "CREATE FUNCTION kynsey_test_conflict() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; END $$",
    "CREATE TRIGGER kynsey_test_conflict BEFORE DELETE ON conversations FOR EACH ROW EXECUTE FUNCTION kynsey_test_conflict()",
    "CREATE TRIGGER kynsey_test_conflict BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION kynsey_test_conflict()",
]
CONFLICT_OFF = ["DROP TRIGGER kynsey_test_conflict ON conversations", "DROP TRIGGER kynsey_test_conflict ON messages"]


def test_a_transaction_rolled_back_to_break_a_deadlock_answers_503_database_busy(tmp_path, fake_ollama):
    """Both ways a request writes: an ordinary session (deleting a conversation) and a reply's turn,
    whose statements run on the driver's cursor (``storage/prepared.py``). Before, a deadlock was a 500."""
    with private_database("kynsey_conflict") as url, kynsey_server(url, tmp_path, fake_ollama.url) as server:
        client = server.client(add_user_directly(url, "alice"))
        cid = new_conversation(client)
        for statement in CONFLICT_ON:
            asyncio.run(admin_execute(url, statement))
        for method, path, body in (("DELETE", f"/api/conversations/{cid}", None),
                                   ("POST", f"/api/conversations/{cid}/messages", {"content": "hello"})):
            resp = client.request(method, path, json=body)
            assert resp.status_code == 503 and resp.headers["retry-after"] == "1", (method, resp.status_code, resp.text)
            assert resp.json()["error"] == {"code": "database_busy", "message": "the database broke off this request "
                                            "to resolve a conflict with another one; try again"}
        assert client.get(f"/api/conversations/{cid}").json()["messages"] == []  # the turn wrote nothing
        for statement in CONFLICT_OFF:
            asyncio.run(admin_execute(url, statement))
        assert send(client, cid, "hello")[-1][0] == "done"
        assert client.delete(f"/api/conversations/{cid}").status_code == 204


def add_user_directly(database_url: str, name: str) -> str:
    """A user and a token written before the server runs (its role has no connection to spare for set-up)."""
    from kynsey.accounts.service import create_user, issue_token
    from kynsey.catalog import load_catalog
    from kynsey.storage.db import make_engine, make_sessionmaker

    async def work() -> str:
        engine = make_engine(database_url)
        try:
            async with make_sessionmaker(engine)() as db:
                user = await create_user(db, load_catalog(OLLAMA_TIERS), name, "pro", password=None)
                token = await issue_token(db, user)
                await db.commit()
                return token
        finally:
            await engine.dispose()

    return asyncio.run(work())


def _hold_or_none(server: LiveServer):
    try:
        return hold_a_connection(server)
    except Exception:
        return None
