"""Stopping a reply (SPEC F18, issue 10 item 1): the backend stream closes, the partial text is
saved 'stopped', every attached stream ends with an error event; only the owner may stop it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert

from kynsey.storage.models import Message
from tests.browser.pages import wait_until
from tests.sse import collect, events, text_of

LONG = " ".join(f"word{i}" for i in range(2000))  # 2,000 tokens at 20 ms each: 40 s unless stopped


def new_conversation(client) -> str:
    return client.post("/api/conversations", json={"title": "t"}).json()["id"]


def test_stop_closes_the_backend_stream_keeps_the_partial_text_and_ends_every_stream(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    fake_ollama.reply, fake_ollama.token_delay = LONG, 0.02
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "talk"}) as resp:
        posted = events(resp)
        start = next(posted)
        mid = start[1]["message_id"]
        seen = [start, next(posted), next(posted)]
        with client.stream("GET", f"/api/conversations/{cid}/messages/{mid}/stream") as again:
            attached = events(again)
            assert next(attached)[0] == "start"
            answer = client.post(f"/api/conversations/{cid}/messages/{mid}/stop")
            rest_attached = list(attached)
        seen += list(posted)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["stopped"] is True and body["message"]["status"] == "stopped"
    assert seen[-1] == ("error", {"code": "stopped", "message": "stopped by the user"})
    assert rest_attached[-1][0] == "error" and rest_attached[-1][1]["code"] == "stopped"
    partial = text_of(seen)
    assert partial and len(partial) < len(LONG) and body["message"]["content"] == partial
    wait_until(lambda: fake_ollama.clients_gone == 1, "the fake Ollama to see Kynsey close the chat request")
    stored = client.get(f"/api/conversations/{cid}").json()["messages"][-1]
    assert (stored["status"], stored["content"], stored["error"]) == ("stopped", partial, "stopped by the user")
    replay = collect(client, "GET", f"/api/conversations/{cid}/messages/{mid}/stream")
    assert text_of(replay) == partial and replay[-1][1]["code"] == "stopped"
    fake_ollama.reply, fake_ollama.token_delay = None, 0.0
    assert collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "next"})[-1][0] == "done"


def test_only_the_owner_can_stop_and_a_finished_reply_says_how_it_ended(server, fake_ollama):
    alice = server.client(server.add_user("alice", "pro"))
    mallory = server.client(server.add_user("mallory", "pro"))
    cid = new_conversation(alice)
    fake_ollama.reply, fake_ollama.token_delay = LONG, 0.02
    with alice.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "talk"}) as resp:
        posted = events(resp)
        mid = next(posted)[1]["message_id"]
        for url in (
            f"/api/conversations/{cid}/messages/{mid}/stop",
            f"/api/conversations/nope/messages/{mid}/stop",
            f"/api/conversations/{cid}/messages/{'0' * 32}/stop",
        ):
            assert mallory.post(url).status_code == 404
        assert alice.post(f"/api/conversations/{cid}/messages/{'0' * 32}/stop").json()["error"]["code"] == "not_found"
        assert alice.post(f"/api/conversations/{cid}/messages/x%00/stop").status_code == 404
        next(posted)  # still streaming: nobody else stopped it
        assert alice.post(f"/api/conversations/{cid}/messages/{mid}/stop").json()["stopped"] is True
        assert list(posted)[-1][1]["code"] == "stopped"
    again = alice.post(f"/api/conversations/{cid}/messages/{mid}/stop")
    assert again.status_code == 200 and again.json()["stopped"] is False
    assert again.json()["message"]["status"] == "stopped"
    fake_ollama.reply, fake_ollama.token_delay = None, 0.0
    done = collect(alice, "POST", f"/api/conversations/{cid}/messages", json={"content": "short"})
    late = alice.post(f"/api/conversations/{cid}/messages/{done[0][1]['message_id']}/stop").json()
    assert late["stopped"] is False and late["message"]["status"] == "complete"
    user_mid = done[0][1]["user_message_id"]
    assert alice.post(f"/api/conversations/{cid}/messages/{user_mid}/stop").status_code == 404


def test_a_reply_another_instance_writes_is_not_running_here(server):
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    mid = "f" * 32
    now = datetime.now(UTC)

    def job(conn):
        conn.execute(
            insert(Message.__table__),
            {
                "id": mid,
                "conversation_id": cid,
                "parent_id": None,
                "seq": 1,
                "role": "assistant",
                "content": "half",
                "status": "streaming",
                "created_at": now,
                "updated_at": now,
            },
        )

    server.call(lambda rt: rt.jobs.run(job))
    resp = client.post(f"/api/conversations/{cid}/messages/{mid}/stop")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_running_here"


def test_a_reply_can_be_stopped_before_its_first_token(server, fake_ollama):
    """A model still loading sends no event yet: the reply's ids are in the stream's headers."""
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    fake_ollama.first_token_delay = 60  # a cold model that takes a minute to load
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "hello?"}) as resp:
        assert resp.headers["x-conversation-id"] == cid
        mid, asked = resp.headers["x-message-id"], resp.headers["x-user-message-id"]
        wait_until(lambda: any(path == "/api/chat" for path, _ in fake_ollama.requests), "the chat request to reach the model")
        answer = client.post(f"/api/conversations/{cid}/messages/{mid}/stop").json()
        evts = list(events(resp))
    assert answer["stopped"] is True and answer["message"]["status"] == "stopped" and answer["message"]["content"] == ""
    assert evts == [("error", {"code": "stopped", "message": "stopped by the user"})]
    wait_until(lambda: fake_ollama.clients_gone == 1, "the fake Ollama to see Kynsey give up the chat request")
    messages = client.get(f"/api/conversations/{cid}").json()["messages"]
    assert [(m["id"], m["status"]) for m in messages] == [(asked, "complete"), (mid, "stopped")]
