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
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from kynsey.storage.db import make_engine
from kynsey.storage.models import Message
from tests.live import eventually
from tests.pg import private_database
from tests.proxy import FaultProxy
from tests.sse import collect, events, text_of

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
    # Every request looks its caller up (auth_cache_seconds=0): a caller kept for its second would let a
    # route that needs nothing else from the database answer through the first second of an outage.
    server = start_server(ollama_host=fake_ollama.url, database_url=through, auth_cache_seconds=0, **FAST_DB)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"), timeout=15)
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]

    proxy.cut()
    check_every_route_answers_503(client, cid)
    proxy.restore()  # recovery needs no restart (a first request may still meet a connection cut meanwhile)
    eventually(lambda: client.get("/api/conversations").status_code == 200, "recovery after an outage")
    eventually(lambda: client.get("/readyz").status_code == 200, "ready again")

    proxy.freeze()  # connections stay open but nothing answers: every answer is bounded by the timeouts
    check_every_route_answers_503(client, cid)
    proxy.restore()
    eventually(lambda: client.get("/api/conversations").status_code == 200, "recovery after a freeze")
    assert client.get("/api/models/tiers").status_code == 200


@pytest.mark.parametrize("fault", ["cut", "freeze"])
def test_a_database_fault_ends_open_replies_at_once_and_keeps_their_text(
    start_server, fake_ollama, pg_through_proxy, fault
):
    """SPEC N6: a database fault ends every open reply with an error event at once (clients must not
    read text that cannot be saved), and the text they saw is saved when the database is back."""
    proxy, through, direct = pg_through_proxy
    server = start_server(ollama_host=fake_ollama.url, database_url=through, chat_flush_seconds=0.1, **FAST_DB)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"), timeout=30)
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]
    fake_ollama.reply = " ".join(f"word{i}" for i in range(300))
    fake_ollama.token_delay = 0.02  # six seconds of reply: the fault lands in the middle

    seen: list[tuple[str, dict]] = []
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "tell me"}) as resp:
        assert resp.status_code == 200
        for name, data in events(resp):
            seen.append((name, data))
            if name == "delta" and len(seen) == 10:
                getattr(proxy, fault)()  # PostgreSQL restarts (or hangs) while the reply streams
    message_id = seen[0][1]["message_id"]
    name, data = seen[-1]
    assert (name, data["code"]) == ("error", "database_unavailable"), seen[-1]
    said = text_of(seen)
    assert 9 <= len(said.split()) < 300  # it stopped soon after the fault, not at the end

    proxy.restore()
    row = eventually(lambda: (r := stored(direct, message_id)).status == "interrupted" and r, "the kept reply to be saved")
    assert row.content == said  # everything the client saw, nothing it did not
    replay = client.get(f"/api/conversations/{cid}").json()["messages"][-1]
    assert (replay["status"], replay["content"]) == ("interrupted", said)
    # The conversation is not stuck. On a loaded machine a flush's BEGIN or COMMIT can still pass
    # the test's 1 s timeout (FAST_DB) and end that reply with an error: such a send is tried again.
    fake_ollama.reply, fake_ollama.token_delay = "short again", 0.0
    eventually(lambda: send_ok(client, cid), "a reply in the same conversation after recovery")


def send_ok(client, cid: str) -> bool:
    resp = client.post(f"/api/conversations/{cid}/messages", json={"content": "again"})
    return resp.status_code == 200 and b"event: done" in resp.content


def test_a_reply_that_ends_while_the_database_is_down_is_saved_when_it_is_back(
    start_server, fake_ollama, pg_through_proxy
):
    """The model finished; only the final save fails: the client has its whole reply and 'done',
    and the database gets the same once it answers (readers see it meanwhile from memory)."""
    proxy, through, direct = pg_through_proxy
    server = start_server(ollama_host=fake_ollama.url, database_url=through, chat_flush_seconds=5, **FAST_DB)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"), timeout=30)
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]
    fake_ollama.reply = " ".join(f"word{i}" for i in range(30))
    fake_ollama.token_delay = 0.02

    seen: list[tuple[str, dict]] = []
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "tell me"}) as resp:
        for name, data in events(resp):
            seen.append((name, data))
            if name == "delta" and len(seen) == 3:
                proxy.cut()  # no flush runs before the end (every 5 s): only the final save meets it
    assert seen[-1][0] == "done" and text_of(seen) == fake_ollama.reply
    assert client.get(f"/api/conversations/{cid}").status_code == 503  # reading needs the database
    proxy.restore()
    row = eventually(lambda: (r := stored(direct, seen[0][1]["message_id"])).status == "complete" and r,
                   "the final save after the outage", timeout=30)
    assert row.content == fake_ollama.reply
    reattached = collect(client, "GET", f"/api/conversations/{cid}/messages/{seen[0][1]['message_id']}/stream")
    assert reattached[-1][0] == "done" and text_of(reattached) == fake_ollama.reply


def test_with_its_caller_kept_a_message_sent_during_an_outage_is_503_and_writes_nothing(
    start_server, fake_ollama, pg_through_proxy
):
    """The caller is kept (KYNSEY_AUTH_CACHE_SECONDS), so the first database work of the send is the
    turn itself: it answers 503 before any stream starts, and no half-written turn is left behind."""
    proxy, through, _ = pg_through_proxy
    server = start_server(ollama_host=fake_ollama.url, database_url=through, auth_cache_seconds=60, **FAST_DB)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"), timeout=15)
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]
    assert client.get("/api/auth/me").status_code == 200  # alice is kept from here on

    proxy.cut()
    resp = client.post(f"/api/conversations/{cid}/messages", json={"content": "hi"})
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "database_unavailable", resp.text
    proxy.restore()
    shown = eventually(lambda: (r := client.get(f"/api/conversations/{cid}")).status_code == 200 and r.json(),
                       "the conversation readable again")
    assert shown["messages"] == []
    after = collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi again"})
    assert after[-1][0] == "done", after
