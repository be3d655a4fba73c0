"""Rename, search, titles, and a first message that creates its conversation (SPEC F18, issue 10 item 5)."""

from __future__ import annotations

from tests.sse import events, text_of


def start(client, content: str, **extra):
    """POST /api/conversations with a first message: (status, events)."""
    with client.stream("POST", "/api/conversations", json={"content": content, **extra}) as resp:
        if resp.status_code != 201:
            resp.read()
            return resp.status_code, resp.json()
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["location"].startswith("/api/conversations/")
        return resp.status_code, list(events(resp))


def titles(client, q: str | None = None) -> list[str]:
    resp = client.get("/api/conversations", params={"q": q} if q is not None else None)
    assert resp.status_code == 200, resp.text
    return [c["title"] for c in resp.json()["conversations"]]


def test_a_first_message_creates_its_conversation_in_one_call(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    status, evts = start(client, "Hello there")
    assert status == 201
    assert [n for n, _ in evts][:2] == ["conversation", "start"] and evts[-1][0] == "done"
    conversation = evts[0][1]
    assert conversation["title"] == "Hello there" and text_of(evts) == "Echo: Hello there"
    stored = client.get(f"/api/conversations/{conversation['id']}").json()
    assert stored["title"] == "Hello there" and [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["current_leaf_id"] == evts[1][1]["message_id"]
    assert start(client, "x", title="Named")[1][0][1]["title"] == "Named"
    assert client.post("/api/conversations", json={}).status_code == 201  # an empty one, as before


def test_a_refused_first_message_leaves_no_conversation(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, chat_rate_limit="1/minute", max_message_chars=50)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    assert start(client, "one")[0] == 201
    status, body = start(client, "two")
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert start(client, "   ")[0] == 422 and start(client, "x" * 51)[0] == 422
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200

    async def downgrade(rt):
        from kynsey.accounts.service import change_plan

        async with rt.sessions() as db:
            await change_plan(db, rt.catalog, "alice", "standard", actor="test")

    server.call(downgrade)
    status, body = start(client, "on a tier I lost")
    assert status == 403 and body["error"]["code"] == "tier_locked"
    assert titles(client) == ["one"]


def test_titles_from_a_first_message_end_at_a_word(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    long = "Please explain how the relay batches network reads into chunks and why that matters so much"
    title = start(client, long)[1][0][1]["title"]
    assert title == "Please explain how the relay batches network reads into…"
    assert long.startswith(title[:-1]) and len(title) <= 61
    url = "https://example.org/" + "a" * 100
    assert start(client, url)[1][0][1]["title"] == url[:60] + "…"  # one long word is cut where it must be
    assert start(client, "  two\n\nlines  ")[1][0][1]["title"] == "two lines"


def test_rename_changes_the_title_only(server, fake_ollama):
    alice = server.client(server.add_user("alice", "pro"))
    mallory = server.client(server.add_user("mallory", "pro"))
    cid = start(alice, "first")[1][0][1]["id"]
    before = alice.get(f"/api/conversations/{cid}").json()
    resp = alice.patch(f"/api/conversations/{cid}", json={"title": "  Trip\nplans "})
    assert resp.status_code == 200 and resp.json()["title"] == "Trip plans"
    after = alice.get(f"/api/conversations/{cid}").json()
    assert after["title"] == "Trip plans" and after["updated_at"] == before["updated_at"]
    assert after["messages"] == before["messages"]
    for body in ({"title": ""}, {"title": "x" * 201}, {}, {"title": 5}, {"title": "a\u0000b"}, {"title": "x", "y": 1}):
        assert alice.patch(f"/api/conversations/{cid}", json=body).status_code == 422, body
    assert alice.patch(f"/api/conversations/{cid}", json={"title": "   "}).json()["error"]["field"] == "title"
    assert mallory.patch(f"/api/conversations/{cid}", json={"title": "mine"}).status_code == 404
    assert titles(alice) == ["Trip plans"]


def test_search_finds_titles_and_any_message_text_and_escapes_wildcards(server, fake_ollama):
    alice = server.client(server.add_user("alice", "pro"))
    mallory = server.client(server.add_user("mallory", "pro"))
    start(alice, "Packing list for Lisbon")
    start(alice, "What is 100% of nothing?")
    start(alice, "snake_case or camelCase")
    fake_ollama.reply = "The Tagus river runs through the city, and trams climb its hills."
    start(alice, "Tell me about the city")
    start(mallory, "Lisbon secrets")
    assert titles(alice, "lisbon") == ["Packing list for Lisbon"]  # case-insensitive, mine only
    assert titles(alice, "TAGUS") == ["Tell me about the city"]  # a reply's text
    assert titles(alice, "100%") == ["What is 100% of nothing?"]
    assert titles(alice, "%") == ["What is 100% of nothing?"]  # '%' is a character, not a wildcard
    assert titles(alice, "e_c") == ["snake_case or camelCase"] and titles(alice, "e_x") == []
    start(alice, "paths: C:\\temp/a_b")
    assert titles(alice, "C:\\temp/") == ["paths: C:\\temp/a_b"]  # the escape characters match themselves
    assert titles(alice, "\\") == ["paths: C:\\temp/a_b"] and titles(alice, "p/a") == ["paths: C:\\temp/a_b"]
    assert titles(alice, "  ") == titles(alice) and len(titles(alice)) == 5
    hit = alice.get("/api/conversations", params={"q": "trams"}).json()["conversations"][0]
    assert hit["snippet"] == "…runs through the city, and trams climb its hills."
    assert alice.get("/api/conversations", params={"q": "lisbon"}).json()["conversations"][0]["snippet"] is None
    assert alice.get("/api/conversations", params={"q": "x" * 101}).status_code == 422
    assert alice.get("/api/conversations", params={"q": "a\u0000"}).status_code == 422


def test_search_finds_text_in_versions_that_are_not_shown(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    evts = start(client, "original wording")[1]
    cid, asked = evts[0][1]["id"], evts[1][1]["user_message_id"]
    with client.stream("POST", f"/api/conversations/{cid}/messages/{asked}/edit", json={"content": "new words"}) as r:
        list(events(r))
    assert client.get(f"/api/conversations/{cid}").json()["messages"][0]["content"] == "new words"
    assert titles(client, "original") == ["original wording"]
    assert (
        client.get("/api/conversations", params={"q": "new words"}).json()["conversations"][0]["snippet"] == "new words"
    )


def test_an_empty_conversation_takes_its_title_from_its_first_message_and_keeps_it(server, fake_ollama):
    """A conversation made empty (``POST /api/conversations`` without a message) is named by the
    first message sent to it; later messages and a given title are left as they are."""
    client = server.client(server.add_user("alice", "pro"))
    empty = client.post("/api/conversations", json={}).json()
    named = client.post("/api/conversations", json={"title": "Named"}).json()
    assert empty["title"] == ""
    for conversation in (empty, named):
        for content in ("Hello there", "and then"):
            with client.stream("POST", f"/api/conversations/{conversation['id']}/messages",
                               json={"content": content}) as resp:
                assert list(events(resp))[-1][0] == "done"
    assert sorted(titles(client)) == ["Hello there", "Named"]
