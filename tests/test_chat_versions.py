"""Regenerate a reply (optionally from another tier), edit a question, move between versions
(SPEC F18, issue 10 item 3). Earlier versions are never deleted; each turn's history is the
path shown; the tier rules and the chat rate limit hold as for any chat."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, update

from kynsey.storage.models import Conversation, Message
from tests.sse import collect, text_of

STANDARD, PRO = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct"


def new_conversation(client) -> str:
    return client.post("/api/conversations", json={"title": "t"}).json()["id"]


def send(client, cid: str, content: str) -> list[tuple[str, dict]]:
    return collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": content})


def regenerate(client, cid: str, mid: str, **body) -> list[tuple[str, dict]]:
    return collect(client, "POST", f"/api/conversations/{cid}/messages/{mid}/regenerate", json=body or None)


def edit(client, cid: str, mid: str, content: str) -> list[tuple[str, dict]]:
    return collect(client, "POST", f"/api/conversations/{cid}/messages/{mid}/edit", json={"content": content})


def shown(client, cid: str) -> list[dict]:
    return client.get(f"/api/conversations/{cid}").json()["messages"]


def last_history(fake) -> list[tuple[str, str]]:
    body = [b for path, b in fake.requests if path == "/api/chat"][-1]
    return [(m["role"], m["content"]) for m in body["messages"]]


def test_regenerate_adds_a_version_beside_the_reply_and_keeps_the_old_one(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    first = send(client, cid, "question")
    old_id, asked_id = first[0][1]["message_id"], first[0][1]["user_message_id"]
    fake_ollama.reply = "a better answer"
    again = regenerate(client, cid, old_id)
    assert again[-1][0] == "done" and text_of(again) == "a better answer"
    new_id = again[0][1]["message_id"]
    assert again[0][1]["user_message_id"] == asked_id
    assert last_history(fake_ollama) == [("user", "question")]  # the old reply is not in the history
    messages = shown(client, cid)
    assert [(m["role"], m["content"]) for m in messages] == [("user", "question"), ("assistant", "a better answer")]
    reply = messages[1]
    assert (reply["id"], reply["version"], reply["versions"], reply["sibling_ids"]) == (new_id, 2, 2, [old_id, new_id])
    assert reply["parent_id"] == asked_id and messages[0]["versions"] == 1

    back = client.post(f"/api/conversations/{cid}/messages/{old_id}/show")
    assert back.status_code == 200, back.text
    assert [(m["content"], m["version"]) for m in back.json()["messages"]] == [("question", 1), ("Echo: question", 1)]
    assert shown(client, cid)[1]["id"] == old_id and back.json()["current_leaf_id"] == old_id
    send(client, cid, "follow-up")  # continues from the version shown
    assert last_history(fake_ollama) == [("user", "question"), ("assistant", "Echo: question"), ("user", "follow-up")]


def test_edit_adds_a_version_of_the_question_and_switching_back_finds_the_old_branch(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    q1 = send(client, cid, "first")[0][1]["user_message_id"]
    send(client, cid, "second")
    edited = edit(client, cid, q1, "first, edited")
    assert text_of(edited) == "Echo: first, edited"
    assert last_history(fake_ollama) == [("user", "first, edited")]
    messages = shown(client, cid)
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "first, edited"),
        ("assistant", "Echo: first, edited"),
    ]
    assert (messages[0]["version"], messages[0]["versions"], messages[0]["sibling_ids"][0]) == (2, 2, q1)
    assert messages[0]["id"] == edited[0][1]["user_message_id"]

    old = client.post(f"/api/conversations/{cid}/messages/{q1}/show").json()["messages"]
    assert [m["content"] for m in old] == ["first", "Echo: first", "second", "Echo: second"]  # the whole old branch
    assert old[0]["version"] == 1 and old[0]["versions"] == 2
    send(client, cid, "third")
    assert [c for _, c in last_history(fake_ollama)] == ["first", "Echo: first", "second", "Echo: second", "third"]


def test_regenerate_with_another_tier_is_checked_like_any_chat(server, fake_ollama):
    pro_user = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(pro_user)
    mid = send(pro_user, cid, "q")[0][1]["message_id"]
    again = regenerate(pro_user, cid, mid, tier="pro")
    assert (again[0][1]["tier"], again[0][1]["model"]) == ("pro", PRO) and again[-1][0] == "done"
    assert [b["model"] for p, b in fake_ollama.requests if p == "/api/chat"][-1] == PRO
    assert pro_user.get("/api/models/tiers").json()["active"] == "standard"  # a one-off: the active tier stays

    basic = server.client(server.add_user("bob", "standard"))
    cid = new_conversation(basic)
    mid = send(basic, cid, "q")[0][1]["message_id"]
    url = f"/api/conversations/{cid}/messages/{mid}/regenerate"
    locked = basic.post(url, json={"tier": "pro"})
    assert locked.status_code == 403 and locked.json()["error"]["code"] == "tier_locked"
    assert locked.json()["error"]["unlock_plans"] == ["pro"]
    assert basic.post(url, json={"tier": "nope"}).json()["error"]["code"] == "unknown_tier"
    assert basic.post(url, json={"tier": "pro", "extra": 1}).status_code == 422
    assert [m["versions"] for m in shown(basic, cid)] == [1, 1]  # nothing was added by the refusals


def test_regenerate_with_another_tier_needs_the_rollout(server, fake_ollama):
    admin = server.client(server.add_user("root", "pro", admin=True))
    assert admin.put("/api/admin/flags/model_switching", json={"state": "off"}).status_code == 200
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    mid = send(client, cid, "q")[0][1]["message_id"]
    url = f"/api/conversations/{cid}/messages/{mid}/regenerate"
    assert client.post(url, json={"tier": "pro"}).json()["error"]["code"] == "feature_disabled"
    assert regenerate(client, cid, mid, tier="standard")[0][1]["tier"] == "standard"  # the default tier answers


def test_regenerate_and_edit_share_the_chat_rate_limit(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, chat_rate_limit="2/minute")
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    first = send(client, cid, "one")
    regenerate(client, cid, first[0][1]["message_id"])
    for url, body in (
        (f"/api/conversations/{cid}/messages/{first[0][1]['message_id']}/regenerate", None),
        (f"/api/conversations/{cid}/messages/{first[0][1]['user_message_id']}/edit", {"content": "x"}),
    ):
        resp = client.post(url, json=body)
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert len(shown(client, cid)) == 2 and shown(client, cid)[1]["versions"] == 2


def test_versions_refuse_wrong_targets_strangers_and_a_busy_conversation(server, fake_ollama):
    alice = server.client(server.add_user("alice", "pro"))
    mallory = server.client(server.add_user("mallory", "pro"))
    cid = new_conversation(alice)
    start = send(alice, cid, "q")[0][1]
    reply_id, asked_id = start["message_id"], start["user_message_id"]
    base = f"/api/conversations/{cid}/messages"
    assert alice.post(f"{base}/{asked_id}/regenerate").status_code == 404  # a question is edited, not regenerated
    assert alice.post(f"{base}/{reply_id}/edit", json={"content": "x"}).status_code == 404
    assert alice.post(f"{base}/{'0' * 32}/show").status_code == 404
    assert alice.post(f"{base}/{reply_id}/edit", json={"content": " "}).status_code == 422
    for method, url, body in (
        ("POST", f"{base}/{reply_id}/regenerate", None),
        ("POST", f"{base}/{asked_id}/edit", {"content": "x"}),
        ("POST", f"{base}/{reply_id}/show", None),
        ("POST", base, {"content": "x"}),
        ("PATCH", f"/api/conversations/{cid}", {"title": "x"}),
    ):
        resp = mallory.request(method, url, json=body)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "conversation_not_found", url
    fake_ollama.reply, fake_ollama.token_delay = " ".join(["w"] * 400), 0.02
    with alice.stream("POST", f"{base}/{reply_id}/regenerate") as resp:
        assert resp.status_code == 200
        busy = [
            alice.post(f"{base}/{reply_id}/show"),
            alice.post(f"{base}/{reply_id}/regenerate"),
            alice.post(f"{base}/{asked_id}/edit", json={"content": "x"}),
            alice.post(base, json={"content": "x"}),
        ]
        assert [r.status_code for r in busy] == [409, 409, 409, 409]
    messages = shown(alice, cid)
    assert messages[0]["content"] == "q" and messages[1]["versions"] == 2 and len(messages) == 2


def test_a_reply_that_ended_is_not_busy_while_its_final_save_is_pending(start_server, fake_ollama):
    """The terminal event goes out before the final save; the next turn must not find the reply
    'still being written', and sends the text it ended with, not the last flushed part."""
    server = start_server(ollama_host=fake_ollama.url, chat_flush_seconds=600)  # no flush saves it meanwhile
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    asked, reply = "a" * 32, "b" * 32
    now = datetime.now(UTC)

    def job(conn):
        common = {"conversation_id": cid, "created_at": now, "updated_at": now, "status": "complete"}
        conn.execute(
            insert(Message.__table__),
            [
                {**common, "id": asked, "parent_id": None, "seq": 1, "role": "user", "content": "q"},
                {
                    **common,
                    "id": reply,
                    "parent_id": asked,
                    "seq": 2,
                    "role": "assistant",
                    "content": "the first h",
                    "status": "streaming",
                },
            ],
        )
        conn.execute(
            update(Conversation.__table__).where(Conversation.__table__.c.id == cid).values(current_leaf_id=reply)
        )

    async def ended(rt):
        await rt.jobs.run(job)
        rt.live.unsaved[reply] = {"status": "complete", "content": "the first half and the rest"}

    server.call(ended)
    assert send(client, cid, "next")[-1][0] == "done"
    assert last_history(fake_ollama) == [("user", "q"), ("assistant", "the first half and the rest"), ("user", "next")]


def test_a_conversation_without_a_stored_leaf_continues_its_newest_branch(start_server, fake_ollama):
    """Conversations from before migration 0009, or whose stored leaf is gone, show the newest branch's
    end; the next question follows it and sends that path (on PostgreSQL the one-statement send
    refuses such a conversation and the turn reads and writes as usual)."""
    server = start_server(ollama_host=fake_ollama.url)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    now = datetime.now(UTC)
    for leaf in (None, "f" * 32):
        cid = new_conversation(client)
        ids = [f"{n}{cid[1:]}" for n in "1234"]  # q1 -> a1, and a second version of q1 -> a2

        def job(conn, cid=cid, ids=ids, leaf=leaf):
            common = {"conversation_id": cid, "created_at": now, "updated_at": now, "status": "complete"}
            rows = [(ids[0], None, "user", "q"), (ids[1], ids[0], "assistant", "old answer"),
                    (ids[2], None, "user", "q again"), (ids[3], ids[2], "assistant", "new answer")]
            conn.execute(insert(Message.__table__), [
                {**common, "id": i, "parent_id": p, "seq": n, "role": r, "content": c}
                for n, (i, p, r, c) in enumerate(rows, 1)])
            conn.execute(update(Conversation.__table__).where(Conversation.__table__.c.id == cid)
                         .values(current_leaf_id=leaf))

        server.call(lambda rt, job=job: rt.jobs.run(job))
        assert send(client, cid, "next")[-1][0] == "done"
        assert last_history(fake_ollama) == [("user", "q again"), ("assistant", "new answer"), ("user", "next")]
        messages = shown(client, cid)
        assert [m["content"] for m in messages] == ["q again", "new answer", "next", "Echo: next"]
        assert messages[2]["parent_id"] == ids[3]
