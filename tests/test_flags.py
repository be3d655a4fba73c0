"""The model_switching flag: sticky rollout, kill switch, cache, admin API and CLI (SPEC F10)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from sqlalchemy import event, select

from kynsey.rollout.flags import FLAG, FlagState, bucket
from kynsey.storage.models import AuditEntry
from tests.live import eventually
from tests.sse import collect

FLAG_URL = f"/api/admin/flags/{FLAG}"
PRO = "qwen2.5:14b-instruct"


def audit_rows(server, action: str | None = None) -> list[AuditEntry]:
    async def work(rt):
        async with rt.sessions() as db:
            stmt = select(AuditEntry).order_by(AuditEntry.id)
            if action:
                stmt = stmt.where(AuditEntry.action == action)
            return list(await db.scalars(stmt))

    return server.call(work)



def run_cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KYNSEY_DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "kynsey.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_buckets_are_stable_and_a_growing_rollout_keeps_everyone_in():
    names = [f"user{i}" for i in range(2000)]
    assert bucket(FLAG, "alice") == bucket(FLAG, "alice") and 0 <= bucket(FLAG, "alice") < 100
    at = {p: {n for n in names if FlagState(FLAG, "percentage", p).includes(n)} for p in (0, 10, 25, 50, 100)}
    assert at[0] == set() and at[100] == set(names)
    assert at[10] <= at[25] <= at[50] <= at[100]
    assert 400 < len(at[25]) < 600  # sha256 spreads names evenly
    allow = FlagState(FLAG, "percentage", 0, allow=("zed",))
    assert allow.includes("zed") and not allow.includes("alice")
    killed = FlagState(FLAG, "off", 100, allow=("zed",))
    assert not killed.includes("zed") and not killed.enabled


def test_with_no_stored_row_the_flag_is_on(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    body = admin.get(FLAG_URL).json()
    assert (body["state"], body["effective_percent"], body["stored"], body["killed"]) == ("on", 100.0, False, False)
    user = server.client(server.add_user("alice", "pro"))
    assert user.get("/api/models/tiers").json()["switching_enabled"] is True
    assert user.post("/api/models/tier", json={"tier": "pro"}).status_code == 200


def test_off_refuses_switches_hides_the_selector_and_the_default_tier_answers(server, fake_ollama):
    admin = server.client(server.add_user("root", "pro", admin=True))
    user = server.client(server.add_user("alice", "pro"))
    assert user.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    assert admin.put(FLAG_URL, json={"state": "off"}).json()["state"] == "off"

    resp = user.post("/api/models/tier", json={"tier": "code"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "feature_disabled"
    switch = audit_rows(server, "switch")[-1]
    assert (switch.result, switch.to_tier, switch.request_id) == ("feature_disabled", "code", resp.headers["x-request-id"])
    tiers = user.get("/api/models/tiers").json()
    assert tiers["switching_enabled"] is False and tiers["active"] == "standard"

    cid = user.post("/api/conversations", json={"title": "t"}).json()["id"]
    start = collect(user, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})[0][1]
    assert (start["tier"], start["model"]) == ("standard", "llama3.2:3b-instruct-fp16")

    assert admin.put(FLAG_URL, json={"state": "on"}).json()["enabled_at"] is not None
    tiers = user.get("/api/models/tiers").json()
    assert tiers["switching_enabled"] is True and tiers["active"] == "pro"  # the stored choice comes back
    start = collect(user, "POST", f"/api/conversations/{cid}/messages", json={"content": "again"})[0][1]
    assert (start["tier"], start["model"]) == ("pro", PRO)


def test_a_percentage_rollout_with_an_allowlist_is_sticky(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    names = [f"u{i}" for i in range(24)]
    tokens = {n: server.add_user(n, "pro") for n in names}
    outsider = next(n for n in names if bucket(FLAG, n) >= 50)

    def enabled() -> set[str]:
        got = set()
        for name, token in tokens.items():
            if server.client(token).get("/api/models/tiers").json()["switching_enabled"]:
                got.add(name)
        return got

    body = admin.put(FLAG_URL, json={"percent": 25, "allow": [outsider]}).json()
    assert (body["state"], body["percent"], body["allow"]) == ("percentage", 25.0, [outsider])
    at25 = enabled()
    assert at25 == {n for n in names if bucket(FLAG, n) < 25} | {outsider}
    admin.put(FLAG_URL, json={"percent": 50})
    at50 = enabled()
    assert at25 <= at50 and at50 == {n for n in names if bucket(FLAG, n) < 50} | {outsider}
    assert at50 != set(names)  # someone is still out, so the check above means something

    refused = next(n for n in names if n not in at50)
    resp = server.client(tokens[refused]).post("/api/models/tier", json={"tier": "pro"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "feature_disabled"
    inside = next(n for n in names if bucket(FLAG, n) < 50)
    assert server.client(tokens[inside]).post("/api/models/tier", json={"tier": "pro"}).status_code == 200


def test_every_change_is_audited_as_flag(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    admin.put(FLAG_URL, json={"percent": 10})
    admin.put(FLAG_URL, json={"state": "off"})
    resp = admin.put(FLAG_URL, json={"state": "on", "allow": ["bob"]})
    rows = audit_rows(server, "flag")
    assert [(r.actor, r.subject, r.result) for r in rows] == [("root", FLAG, "ok")] * 3
    assert rows[-1].request_id == resp.headers["x-request-id"]
    assert '"reenabled": true' in rows[-1].details and '"reenabled": false' in rows[1].details
    assert rows[0].reason == f"{FLAG}: on for 10% of users"


def test_the_flag_api_is_for_admins_and_checks_its_input(server):
    server.add_user("root", "pro", admin=True, password="admin password")
    user = server.client(server.add_user("alice", "pro"))
    assert server.client().get(FLAG_URL).status_code == 401
    resp = user.put(FLAG_URL, json={"state": "off"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"

    page = server.client()
    csrf = page.post("/api/auth/login", json={"name": "root", "password": "admin password"}).json()["csrf_token"]
    assert page.put(FLAG_URL, json={"state": "off"}).json()["error"]["code"] == "csrf_failed"
    assert page.put(FLAG_URL, json={"state": "off"}, headers={"X-CSRF-Token": csrf}).status_code == 200
    for body in ({"percent": 101}, {"percent": -1}, {"state": "maybe"}, {"state": "on", "percent": 5}, {"x": 1}):
        resp = page.put(FLAG_URL, json=body, headers={"X-CSRF-Token": csrf})
        assert resp.status_code == 422, (body, resp.text)
    assert page.get("/api/admin/flags/other").status_code == 404
    assert page.get(FLAG_URL).json()["state"] == "off"  # the bad requests changed nothing
    assert len(audit_rows(server, "flag")) == 1


def test_evaluating_the_flag_adds_no_database_round_trip(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, flag_cache_seconds=3600)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    client.get("/api/models/tiers")  # the first read fills the cache
    reads: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if "feature_flags" in statement:
            reads.append(statement)

    engine = server.runtime.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for i in range(10):
            assert client.get("/api/models/tiers").json()["switching_enabled"] is True
            assert client.post("/api/models/tier", json={"tier": ["pro", "standard"][i % 2]}).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert reads == []


def test_another_instance_sees_a_change_within_the_cache_time(start_server, fake_ollama):
    a = start_server(ollama_host=fake_ollama.url)
    b = start_server(ollama_host=fake_ollama.url, flag_cache_seconds=0.3)
    admin = a.client(a.add_user("root", "pro", admin=True))
    on_b = b.client(b.add_user("alice", "pro"))
    assert on_b.get("/api/models/tiers").json()["switching_enabled"] is True
    admin.put(FLAG_URL, json={"state": "off"})
    eventually(lambda: on_b.get("/api/models/tiers").json()["switching_enabled"] is False, "B sees the flag off")
    assert on_b.post("/api/models/tier", json={"tier": "pro"}).json()["error"]["code"] == "feature_disabled"


def test_the_cli_shows_and_changes_the_flag(start_server, fake_ollama, db_url):
    server = start_server(ollama_host=fake_ollama.url, flag_cache_seconds=0.2)
    user = server.client(server.add_user("alice", "pro"))
    shown = run_cli(db_url, "flag", FLAG)
    assert shown.returncode == 0 and "on for everyone by default" in shown.stdout

    done = run_cli(db_url, "flag", FLAG, "--percent", "25", "--allow", "alice,bob")
    assert done.returncode == 0, done.stderr
    assert f"{FLAG}: on for 25% of users plus 2 allowlisted" in done.stdout
    done = run_cli(db_url, "flag", FLAG, "off")
    assert done.returncode == 0 and f"{FLAG}: off" in done.stdout
    eventually(lambda: user.get("/api/models/tiers").json()["switching_enabled"] is False, "the server sees off")
    assert run_cli(db_url, "flag", FLAG, "on").returncode == 0
    eventually(lambda: user.get("/api/models/tiers").json()["switching_enabled"] is True, "the server sees on")

    assert run_cli(db_url, "flag", FLAG, "sideways").returncode == 2
    assert run_cli(db_url, "flag", "no_such_flag").returncode == 1
    rows = audit_rows(server, "flag")
    assert [(r.actor, r.reason) for r in rows] == [
        ("cli", f"{FLAG}: on for 25% of users plus 2 allowlisted"),
        ("cli", f"{FLAG}: off"),
        ("cli", f"{FLAG}: on"),
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_past_half_its_cache_time_the_flag_is_read_ahead_and_no_request_waits(db_url):
    """Steady traffic never finds the cache expired; a read that began before a change made here
    (the guard's kill) cannot bring back the state the change replaced."""
    from contextlib import asynccontextmanager

    from sqlalchemy.ext.asyncio import async_sessionmaker

    from kynsey.metrics import Metrics
    from kynsey.rollout.flags import Flags
    from kynsey.storage.db import make_engine

    async def scenario():
        engine = make_engine(db_url)
        clock, reads, held = Clock(), [], []
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *a: reads.append(1) if "feature_flags" in statement else None)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        parked, gate = asyncio.Event(), asyncio.Event()

        @asynccontextmanager
        async def sessions():
            async with maker() as db:
                yield db
            if held and held.pop():  # this session's reading is done; what it read waits here
                parked.set()
                await gate.wait()

        flags = Flags(sessions, ttl=2.0, metrics=Metrics(), clock=clock)
        try:
            await flags.set(FLAG, actor="test", state="percentage", percent=30)
            clock.now += 1.5  # past half the cache time: served from the cache, read again behind it
            served = (await flags.get()).state
            await asyncio.gather(*flags._reading.values())
            clock.now += 1.5  # 3 s after the change, 1.5 s after the read ahead: still fresh
            before = len(reads)
            fresh = (await flags.get()).state
            waited = len(reads) - before
            await asyncio.gather(*flags._reading.values())
            clock.now += 1.5  # a read ahead that has read 'percentage' when the guard turns the flag off
            held.append(True)
            await flags.get()
            ahead = list(flags._reading.values())
            async with asyncio.timeout(10):
                await parked.wait()
            await flags.set(FLAG, actor="test", state="off")
            gate.set()
            await asyncio.gather(*ahead)
            return served, fresh, waited, (await flags.get()).state
        finally:
            await flags.aclose()
            await engine.dispose()

    served, fresh, waited, after_kill = asyncio.run(scenario())
    assert (served, fresh, waited) == ("percentage", "percentage", 0)
    assert after_kill == "off"
