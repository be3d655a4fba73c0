"""Chat over real HTTP and SSE: streaming, history across switches, zero data loss (SPEC F5)."""

from __future__ import annotations

import threading
import time

from tests.sse import collect, events, text_of

STANDARD, PRO = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct"


def new_conversation(client) -> str:
    resp = client.post("/api/conversations", json={"title": "t"})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def send(client, cid: str, content: str) -> list[tuple[str, dict]]:
    return collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": content})


def chat_requests(fake):
    return [body for path, body in fake.requests if path == "/api/chat"]


def test_a_reply_streams_start_deltas_done_and_is_stored(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    evts = send(client, cid, "hello there")
    names = [n for n, _ in evts]
    assert names[0] == "start" and names[-1] == "done" and "delta" in names
    start, done = evts[0][1], evts[-1][1]
    assert (start["tier"], start["model"]) == ("standard", STANDARD) and "fallback_from" not in start
    assert text_of(evts) == "Echo: hello there"
    assert done["tokens"] > 0 and done["ttft_ms"] > 0 and "load_ms" in done and "tokens_per_s" in done
    messages = client.get(f"/api/conversations/{cid}").json()["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "hello there", "complete"),
        ("assistant", "Echo: hello there", "complete"),
    ]
    assert messages[1]["id"] == start["message_id"] and messages[1]["tier"] == "standard"
    assert messages[1]["model"] == STANDARD and messages[1]["tokens"] == done["tokens"]


def test_switching_mid_conversation_keeps_the_whole_history(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    send(client, cid, "first question")
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    evts = send(client, cid, "second question")
    assert evts[0][1]["tier"] == "pro" and evts[0][1]["model"] == PRO
    last = chat_requests(fake_ollama)[-1]
    assert last["model"] == PRO
    assert [(m["role"], m["content"]) for m in last["messages"]] == [
        ("user", "first question"),
        ("assistant", "Echo: first question"),
        ("user", "second question"),
    ]
    messages = client.get(f"/api/conversations/{cid}").json()["messages"]
    assert [m["tier"] for m in messages if m["role"] == "assistant"] == ["standard", "pro"]


def test_a_switch_during_a_stream_does_not_cut_it(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    fake_ollama.reply = " ".join(f"word{i}" for i in range(30))
    fake_ollama.token_delay = 0.02
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "go"}) as resp:
        stream = events(resp)
        first = [next(stream), next(stream)]
        assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
        rest = list(stream)
    evts = first + rest
    assert evts[0][1]["tier"] == "standard" and evts[-1][0] == "done"
    assert text_of(evts) == fake_ollama.reply


def test_a_disconnected_browser_does_not_stop_the_reply_and_can_reattach(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    fake_ollama.reply = " ".join(f"w{i}" for i in range(40))
    fake_ollama.token_delay = 0.02
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "go"}) as resp:
        stream = events(resp)
        start = next(stream)[1]
        next(stream)
    # the browser left; re-attach and get everything from the start
    url = f"/api/conversations/{cid}/messages/{start['message_id']}/stream"
    evts = collect(client, "GET", url)
    assert evts[0][0] == "start" and evts[-1][0] == "done"
    assert text_of(evts) == fake_ollama.reply
    stored = client.get(f"/api/conversations/{cid}").json()["messages"][-1]
    assert stored["status"] == "complete" and stored["content"] == fake_ollama.reply
    # re-attaching to a finished reply replays it from storage
    again = collect(client, "GET", url)
    assert text_of(again) == fake_ollama.reply and again[-1][0] == "done"


def test_a_mid_stream_failure_keeps_the_partial_text_marked_interrupted(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    for mode in ("stream_error", "disconnect"):
        fake_ollama.fail[STANDARD] = mode
        evts = send(client, cid, f"try {mode}")
        assert evts[0][0] == "start" and evts[-1][0] == "error" and evts[-1][1]["code"] == "stream_broken"
        partial = text_of(evts)
        assert partial
        stored = client.get(f"/api/conversations/{cid}").json()["messages"][-1]
        assert stored["status"] == "interrupted" and stored["content"] == partial and stored["error"]


def test_conversations_are_private(server):
    alice = server.client(server.add_user("alice", "pro"))
    mallory = server.client(server.add_user("mallory", "pro"))
    cid = new_conversation(alice)
    evts = send(alice, cid, "secret")
    mid = evts[0][1]["message_id"]
    assert [c["id"] for c in mallory.get("/api/conversations").json()["conversations"]] == []
    for method, url, body in (
        ("GET", f"/api/conversations/{cid}", None),
        ("DELETE", f"/api/conversations/{cid}", None),
        ("POST", f"/api/conversations/{cid}/messages", {"content": "hi"}),
        ("GET", f"/api/conversations/{cid}/messages/{mid}/stream", None),
    ):
        resp = mallory.request(method, url, json=body)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "conversation_not_found", (method, url)
    assert len(alice.get(f"/api/conversations/{cid}").json()["messages"]) == 2
    assert alice.delete(f"/api/conversations/{cid}").status_code == 204
    assert alice.get(f"/api/conversations/{cid}").status_code == 404


def test_bad_input_gets_a_clear_error_and_writes_nothing(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, max_message_chars=100)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    url = f"/api/conversations/{cid}/messages"
    cases = [
        ({"content": ""}, 422),
        ({"content": "   "}, 422),
        ({"content": "x" * 101}, 422),
        ({}, 422),
        ({"content": 5}, 422),
        ({"content": "hi", "tier": "pro"}, 422),
    ]
    for body, status in cases:
        resp = client.post(url, json=body)
        assert resp.status_code == status and resp.json()["error"]["code"] == "invalid_request", body
    resp = client.post(url, content=b"{nope", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert client.post("/api/conversations/doesnotexist/messages", json={"content": "hi"}).status_code == 404
    assert client.get(f"/api/conversations/{cid}").json()["messages"] == []
    assert chat_requests(fake_ollama) == []


def test_a_tier_lost_since_the_conversation_began_is_refused(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    client.post("/api/models/tier", json={"tier": "pro"})
    send(client, cid, "on pro")

    async def downgrade(rt):
        from kynsey.accounts.service import change_plan

        async with rt.sessions() as db:
            await change_plan(db, rt.catalog, "alice", "standard", actor="test")

    server.call(downgrade)
    before = len(chat_requests(fake_ollama))
    resp = client.post(f"/api/conversations/{cid}/messages", json={"content": "again"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "tier_locked"
    assert resp.json()["error"]["unlock_plans"] == ["pro"]
    assert len(client.get(f"/api/conversations/{cid}").json()["messages"]) == 2
    assert len(chat_requests(fake_ollama)) == before


def test_chat_is_rate_limited_per_user_and_tier(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, chat_rate_limit="2/minute")
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    send(client, cid, "one")
    send(client, cid, "two")
    resp = client.post(f"/api/conversations/{cid}/messages", json={"content": "three"})
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    assert send(client, cid, "three, on pro")[-1][0] == "done"  # the limit is per tier
    assert len(client.get(f"/api/conversations/{cid}").json()["messages"]) == 6


def test_concurrent_messages_to_one_conversation_never_interleave(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    fake_ollama.token_delay = 0.01
    codes = []

    def post(text):
        with server.client(client.headers["Authorization"].split()[1]) as c:
            with c.stream("POST", f"/api/conversations/{cid}/messages", json={"content": text}) as resp:
                codes.append(resp.status_code)
                resp.read()

    threads = [threading.Thread(target=post, args=(f"m{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    messages = client.get(f"/api/conversations/{cid}").json()["messages"]
    assert codes.count(200) >= 1 and set(codes) <= {200, 409}
    assert len(messages) == 2 * codes.count(200)
    assert [m["role"] for m in messages] == ["user", "assistant"] * codes.count(200)


def test_unloading_a_model_waits_for_the_stream_using_it(server, fake_ollama):
    admin = server.client(server.add_user("root", "pro", admin=True))
    client = server.client(server.add_user("alice", "pro"))
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200  # pro is not keep_warm
    cid = new_conversation(client)
    fake_ollama.reply = " ".join(f"w{i}" for i in range(25))
    fake_ollama.token_delay = 0.02
    unload = {}
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "go"}) as resp:
        stream = events(resp)
        next(stream), next(stream)

        def unload_now():
            unload["response"] = admin.post("/api/models/pro/unload")
            unload["answered"] = time.monotonic()

        worker = threading.Thread(target=unload_now)
        worker.start()
        rest = list(stream)
        done_at = time.monotonic()
    worker.join()
    assert rest[-1][0] == "done" and text_of([*rest]) and len(text_of(rest)) > 0
    assert unload["response"].status_code == 200 and unload["response"].json()["status"] == "cold"
    assert unload["answered"] >= done_at  # the unload waited for the stream's end (an ordering, not a timing)
    assert [p for p, b in fake_ollama.requests if p == "/api/generate"][-1:] == ["/api/generate"]
    assert PRO not in fake_ollama.loaded
    assert client.post("/api/models/pro/unload").status_code == 403


def test_after_a_downgrade_the_locked_tier_shows_and_switching_away_frees_the_user(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200

    async def downgrade(rt):
        from kynsey.accounts.service import change_plan

        async with rt.sessions() as db:
            await change_plan(db, rt.catalog, "alice", "standard", actor="test")

    server.call(downgrade)
    listing = client.get("/api/models/tiers").json()
    pro = next(t for t in listing["tiers"] if t["tier"] == "pro")
    assert listing["active"] == "pro" and not pro["allowed"] and pro["upgrade"]["unlock_plans"] == ["pro"]
    assert client.post(f"/api/conversations/{cid}/messages", json={"content": "x"}).json()["error"]["code"] == "tier_locked"
    resp = client.post("/api/models/tier", json={"tier": "standard"})
    assert resp.status_code == 200 and resp.json()["status"] == "ready" and resp.json()["previous"] == "pro"
    assert send(client, cid, "back on standard")[0][1]["tier"] == "standard"


def test_the_next_message_sent_the_moment_done_arrives_is_accepted_with_the_whole_history(server, fake_ollama):
    """'done' goes out before the final save commits: the next turn waits for that save, never a 409."""
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    for i in range(15):
        evts = send(client, cid, f"turn {i}")
        assert evts[-1][0] == "done", evts[-1]
    sent = chat_requests(fake_ollama)[-1]["messages"]
    assert [m["content"] for m in sent][-3:] == ["turn 13", "Echo: turn 13", "turn 14"]
    assert len(sent) == 29
