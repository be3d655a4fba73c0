"""Two instances sharing one database and Redis act as one (SPEC N5, issue 12 items 1 and 2):
circuits, the rollback guard's windows, warm-up single-flight, live replies and stops.

Every test uses its own Redis key prefix (``redis_prefix``), so tests never share state.
"""

from __future__ import annotations

import os
import signal
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from kynsey.storage.models import Message
from tests.conftest import HEALTHY_REDIS_TIMEOUT, REDIS_URL
from tests.live import eventually, metric
from tests.sse import collect, events, text_of

LONG = " ".join(f"word{i}" for i in range(2000))  # 2,000 tokens at 20 ms each: 40 s unless stopped
STANDARD_MODEL = "llama3.2:3b-instruct-fp16"
PRO_MODEL = "qwen2.5:14b-instruct"


@pytest.fixture
def pair(start_server, fake_ollama):
    """Start two instances on this test's database and one Redis prefix; ``overrides`` apply to both."""

    def start(**overrides):
        prefix = f"kynsey-test-{uuid.uuid4().hex[:8]}"
        values = {"ollama_host": fake_ollama.url, "redis_url": REDIS_URL, "redis_prefix": prefix,
                  "redis_timeout": HEALTHY_REDIS_TIMEOUT, **overrides}
        one, two = start_server(**values), start_server(**values)
        one.refresh_status()
        two.refresh_status()
        return one, two

    return start


def model_status(client, tier: str) -> dict:
    return next(m for m in client.get("/api/models/status").json()["models"] if m["tier"] == tier)


def chat_requests(fake) -> int:
    return sum(1 for path, _ in fake.requests if path == "/api/chat")


def new_conversation(client) -> str:
    return client.post("/api/conversations", json={"title": "t"}).json()["id"]


@contextmanager
def long_reply_on(a, b, fake_ollama):
    """alice's long reply being written on instance ``a``: her clients on a and b, the conversation,
    the reply's id, its event stream on a and the events read so far (start, a first delta)."""
    token = a.add_user("alice", "pro")
    ca, cb = a.client(token), b.client(token)
    cid = new_conversation(ca)
    fake_ollama.reply, fake_ollama.token_delay = LONG, 0.02
    with ca.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "talk"}) as resp:
        posted = events(resp)
        mid = next(posted)[1]["message_id"]
        yield ca, cb, cid, mid, posted, [next(posted)]


def test_a_circuit_opened_on_one_instance_degrades_the_tier_on_the_other(pair, fake_ollama):
    # No background refresh during the test: a refresh that finds the model listed lets a probe through at once.
    a, b = pair(status_refresh=600)
    token = a.add_user("alice", "standard")
    ca, cb = a.client(token), b.client(token)
    fake_ollama.fail[STANDARD_MODEL] = "error_500"
    for _ in range(3):  # KYNSEY_CIRCUIT_FAILURES
        cid = new_conversation(ca)
        assert collect(ca, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})[-1][0] == "error"
    assert model_status(ca, "standard")["status"] == "degraded"
    seen = eventually(lambda: (s := model_status(cb, "standard"))["status"] == "degraded" and s, "B to see the circuit open")
    assert seen["circuit"] == "open"

    # B sends no chat to the failing model: it answers from the shared circuit.
    before = chat_requests(fake_ollama)
    cid = new_conversation(cb)
    evts = collect(cb, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})
    assert evts[-1][0] == "error" and evts[-1][1]["code"] == "circuit_open", evts
    assert chat_requests(fake_ollama) == before

    # A success anywhere closes it everywhere.
    fake_ollama.fail.pop(STANDARD_MODEL)
    b.call(lambda rt: _async(rt.circuits.success, "ollama", STANDARD_MODEL))
    eventually(lambda: model_status(ca, "standard")["circuit"] == "closed", "A to see the circuit closed")


async def _async(fn, *args):
    return fn(*args)


def test_the_guard_counts_every_instances_switches_and_replies(pair):
    a, b = pair(switch_rate_limit="1000/minute", chat_rate_limit="1000/minute")
    token = a.add_user("alice", "pro")
    clients = [a.client(token), b.client(token)]
    for i, tier in enumerate(["pro", "standard"] * 3):
        assert clients[i % 2].post("/api/models/tier", json={"tier": tier}).status_code in (200, 202)
    for i in range(4):
        cid = new_conversation(clients[i % 2])
        assert collect(clients[i % 2], "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})[-1][0] == "done"

    async def figures(rt):
        status = rt.guard.status()
        return status["switches"]["attempts"], status["ttft"]["baseline_replies"]

    for server in (a, b):
        eventually(lambda server=server: server.call(figures) == (6, 4), "every instance's guard to count all six switches and four replies")


def loads(fake, model: str) -> int:
    """Load requests Kynsey sent (a generate without a prompt that is not an unload)."""
    return sum(1 for path, body in fake.requests
               if path == "/api/generate" and body.get("model") == model and not body.get("prompt")
               and body.get("keep_alive") not in (0, "0"))


def test_a_warm_up_on_one_instance_is_seen_warming_on_the_other_and_loads_once(pair, fake_ollama):
    a, b = pair(switch_warm_wait=1.0)
    fake_ollama.load_delay = 8.0  # a big model: long enough for B to ask for it meanwhile
    token = a.add_user("alice", "pro")
    ca, cb = a.client(token), b.client(token)
    assert model_status(cb, "pro")["status"] == "cold"
    assert ca.post("/api/models/warm", json={"tier": "pro"}).json()["status"] == "warming"
    eventually(lambda: model_status(cb, "pro")["status"] == "warming", "B to show the tier warming")
    switched = cb.post("/api/models/tier", json={"tier": "pro"})  # B needs the model too: it waits for A's load
    assert switched.status_code == 202 and switched.json()["status"] == "warming", switched.text
    eventually(lambda: model_status(cb, "pro")["status"] == "ready", "B to see the model loaded", timeout=60)
    assert model_status(ca, "pro")["status"] == "ready"
    assert loads(fake_ollama, PRO_MODEL) == 1


def test_a_reply_written_on_one_instance_streams_through_the_other_as_it_is_produced(pair, fake_ollama):
    # The database is written only at the end, so whatever B relays before the end was pushed through Redis.
    a, b = pair(chat_flush_seconds=600)
    with long_reply_on(a, b, fake_ollama) as (ca, cb, cid, mid, posted, seen):
        with cb.stream("GET", f"/api/conversations/{cid}/messages/{mid}/stream") as again:
            attached = events(again)
            got = [next(attached)]
            assert got[0][0] == "start"
            got += [next(attached), next(attached), next(attached)]
            assert [name for name, _ in got[1:]] == ["delta"] * 3
            assert a.call(lambda rt: _async(lambda: rt.live.get(mid).final)) is None  # still being written
            assert ca.post(f"/api/conversations/{cid}/messages/{mid}/stop").json()["stopped"] is True
            got += list(attached)
        seen += list(posted)
    assert got[-1][0] == "error" and got[-1][1]["code"] == "stopped"
    assert seen[-1][0] == "error" and seen[-1][1]["code"] == "stopped"
    partial = text_of(seen)
    assert partial and len(partial) < len(LONG)
    assert text_of(got) == partial  # nothing lost, nothing twice
    stored = cb.get(f"/api/conversations/{cid}").json()["messages"][-1]
    assert (stored["status"], stored["content"]) == ("stopped", partial)


def test_a_stop_through_the_other_instance_stops_the_reply(pair, fake_ollama):
    a, b = pair()
    with long_reply_on(a, b, fake_ollama) as (_, cb, cid, mid, posted, seen):
        mallory = b.client(b.add_user("mallory", "pro"))
        assert mallory.post(f"/api/conversations/{cid}/messages/{mid}/stop").status_code == 404
        answer = cb.post(f"/api/conversations/{cid}/messages/{mid}/stop")
        seen += list(posted)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    partial = text_of(seen)
    assert body["stopped"] is True and body["message"]["status"] == "stopped"
    assert body["message"]["content"] == partial and 0 < len(partial) < len(LONG)
    assert seen[-1] == ("error", {"code": "stopped", "message": "stopped by the user"})
    again = cb.post(f"/api/conversations/{cid}/messages/{mid}/stop")
    assert again.status_code == 200 and again.json()["stopped"] is False


def test_a_streaming_reply_no_instance_writes_is_still_not_running_here(pair):
    a, b = pair()
    client = b.client(a.add_user("alice", "pro"))
    cid = new_conversation(client)
    mid, now = "f" * 32, datetime.now(UTC)
    row = {"id": mid, "conversation_id": cid, "parent_id": None, "seq": 1, "role": "assistant", "content": "half",
           "status": "streaming", "created_at": now, "updated_at": now}
    a.call(lambda rt: rt.jobs.run(lambda conn: conn.execute(insert(Message.__table__), row)))
    resp = client.post(f"/api/conversations/{cid}/messages/{mid}/stop")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_running_here"


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_when_redis_dies_or_freezes_both_instances_go_on_with_their_own_state(start_server, fake_ollama, throwaway_redis,
                                                                            fault):
    proc, url = throwaway_redis
    values = dict(ollama_host=fake_ollama.url, redis_url=url, redis_timeout=0.2, redis_retry_seconds=60, status_refresh=600)
    a, b = start_server(**values), start_server(**values)
    a.refresh_status()
    b.refresh_status()
    token = a.add_user("alice", "pro")
    ca, cb = a.client(token, timeout=10), b.client(token, timeout=10)
    cid = new_conversation(ca)
    assert collect(ca, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})[-1][0] == "done"

    if fault == "killed":
        proc.kill()
        proc.wait(10)
    else:
        os.kill(proc.pid, signal.SIGSTOP)

    # Circuits go on in each instance's memory: A's failures open A's circuit; B's requests still flow.
    fake_ollama.fail[STANDARD_MODEL] = "error_500"
    for _ in range(3):
        assert collect(ca, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})[-1][0] == "error"
    assert model_status(ca, "standard")["status"] == "degraded"
    fake_ollama.fail.pop(STANDARD_MODEL)
    assert model_status(cb, "standard")["status"] == "ready"
    cid_b = new_conversation(cb)
    assert collect(cb, "POST", f"/api/conversations/{cid_b}/messages", json={"content": "hi"})[-1][0] == "done"
    assert cb.post("/api/models/tier", json={"tier": "code"}).status_code in (200, 202)  # a warm-up with no claim

    # A reply on A re-attached through B falls back to reading the database, and still ends.
    fake_ollama.reply, fake_ollama.token_delay = LONG, 0.02
    cid_b2 = new_conversation(cb)
    with cb.stream("POST", f"/api/conversations/{cid_b2}/messages", json={"content": "talk"}) as resp:
        posted = events(resp)
        mid = next(posted)[1]["message_id"]
        next(posted)
        refused = ca.post(f"/api/conversations/{cid_b2}/messages/{mid}/stop")  # nobody can ask B now
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_running_here"
        with ca.stream("GET", f"/api/conversations/{cid_b2}/messages/{mid}/stream") as again:
            attached = events(again)
            assert next(attached)[0] == "start"
            assert cb.post(f"/api/conversations/{cid_b2}/messages/{mid}/stop").json()["stopped"] is True
            rest = list(attached)
        list(posted)
    assert rest[-1][0] == "error" and rest[-1][1]["code"] == "stopped"
    for server in (a, b):
        assert metric(server, "kynsey_cluster_fallback") == 1
        assert metric(server, "kynsey_redis_errors_total") >= 1
