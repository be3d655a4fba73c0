"""PostgreSQL dies or freezes under a running Kynsey (SPEC N3, N6; issue: hardening).

Each test gets a private PostgreSQL database reached through a loopback proxy
it can cut (the server died or restarted) or freeze (it hangs, as under
SIGSTOP), so the shared PostgreSQL other tests use is never touched. Wanted:
503 ``database_unavailable`` on every route, never a 500; every request and
``/readyz`` bounded in time; recovery without a restart; and a reply whose
final save fails still ends at once for its client, with its text kept in
memory and saved once the database is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from kynsey.storage.db import make_engine
from kynsey.storage.models import Message
from tests.pg import private_database
from tests.proxy import FaultProxy
from tests.sse import events, text_of

FAST_DB = dict(db_connect_timeout=1.0, db_statement_timeout=1.0, db_pool_timeout=2.0, status_timeout=1.0)


@pytest.fixture
def pg_through_proxy() -> Iterator[tuple[FaultProxy, str, str]]:
    """(proxy, URL through the proxy, direct URL) of a private, migrated PostgreSQL database."""
    with private_database("kynsey_fault") as direct:
        url = make_url(direct)
        with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), direct


def stored(direct_url: str, message_id: str) -> Message:
    async def read() -> Message:
        engine = make_engine(direct_url)
        try:
            async with engine.connect() as conn:
                return (await conn.execute(select(Message).where(Message.id == message_id))).one()
        finally:
            await engine.dispose()

    return asyncio.run(read())


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def check_every_route_answers_503(client: httpx.Client, cid: str) -> None:
    calls = [
        ("GET", "/api/models/tiers", None), ("GET", "/api/models/status", None), ("GET", "/api/auth/me", None),
        ("POST", "/api/models/tier", {"tier": "pro"}), ("GET", "/api/conversations", None),
        ("POST", "/api/conversations", {"title": "x"}), ("GET", f"/api/conversations/{cid}", None),
        ("POST", f"/api/conversations/{cid}/messages", {"content": "hi"}),
        ("POST", "/api/auth/login", {"name": "alice", "password": "whatever-long"}),
    ]
    for method, path, body in calls:
        resp = client.request(method, path, json=body)
        assert resp.status_code == 503, (method, path, resp.status_code, resp.text)
        assert resp.json()["error"]["code"] == "database_unavailable", (method, path, resp.text)
        assert resp.headers["retry-after"]
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "database" in ready.json()["down"]


def test_postgres_down_or_frozen_is_503_on_every_route_and_recovers_without_restart(
    start_server, fake_ollama, pg_through_proxy
):
    proxy, through, _ = pg_through_proxy
    server = start_server(ollama_host=fake_ollama.url, database_url=through, **FAST_DB)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"), timeout=15)
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]

    proxy.cut()
    check_every_route_answers_503(client, cid)
    proxy.restore()  # recovery needs no restart (a first request may still meet a connection cut meanwhile)
    wait_for(lambda: client.get("/api/conversations").status_code == 200, "recovery after an outage")
    wait_for(lambda: client.get("/readyz").status_code == 200, "ready again")

    proxy.freeze()  # connections stay open but nothing answers: every answer is bounded by the timeouts
    check_every_route_answers_503(client, cid)
    proxy.restore()
    wait_for(lambda: client.get("/api/conversations").status_code == 200, "recovery after a freeze")
    assert client.get("/api/models/tiers").status_code == 200


@pytest.mark.parametrize("fault", ["cut", "freeze"])
def test_a_reply_whose_final_save_fails_ends_at_once_and_is_saved_when_the_database_is_back(
    start_server, fake_ollama, pg_through_proxy, fault
):
    proxy, through, direct = pg_through_proxy
    server = start_server(ollama_host=fake_ollama.url, database_url=through, **FAST_DB)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"), timeout=30)
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]
    fake_ollama.reply = " ".join(f"word{i}" for i in range(60))
    fake_ollama.token_delay = 0.02

    seen: list[tuple[str, dict]] = []
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "tell me"}) as resp:
        assert resp.status_code == 200
        for name, data in events(resp):
            seen.append((name, data))
            if name == "delta" and len(seen) == 5:
                getattr(proxy, fault)()  # PostgreSQL restarts (or hangs) while the reply streams
    message_id = seen[0][1]["message_id"]
    final = seen[-1]
    assert final[0] == "error" and final[1]["code"] == "database_unavailable", final
    assert text_of(seen) == fake_ollama.reply  # the client saw every word

    proxy.restore()
    row = wait_for(lambda: (r := stored(direct, message_id)).status == "complete" and r, "the kept reply to be saved")
    assert row.content == fake_ollama.reply
    replay = client.get(f"/api/conversations/{cid}").json()["messages"][-1]
    assert (replay["status"], replay["content"]) == ("complete", fake_ollama.reply)


def test_text_is_kept_through_an_outage_in_the_middle_of_a_reply(start_server, fake_ollama, pg_through_proxy):
    """Flushes that fail keep their text: nothing the client saw is shorter in the database afterwards."""
    proxy, through, direct = pg_through_proxy
    server = start_server(ollama_host=fake_ollama.url, database_url=through, chat_flush_seconds=0.05, **FAST_DB)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"), timeout=30)
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]
    fake_ollama.reply = " ".join(f"word{i}" for i in range(80))
    fake_ollama.token_delay = 0.02

    seen: list[tuple[str, dict]] = []
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "tell me"}) as resp:
        for name, data in events(resp):
            seen.append((name, data))
            deltas = sum(1 for n, _ in seen if n == "delta")
            if name == "delta" and deltas == 10:
                proxy.cut()
            if name == "delta" and deltas == 40:
                proxy.restore()  # back before the end: the final save works
    assert seen[-1][0] == "done", seen[-1]
    row = stored(direct, seen[0][1]["message_id"])
    assert (row.status, row.content) == ("complete", fake_ollama.reply)
