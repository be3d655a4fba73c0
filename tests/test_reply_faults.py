"""Faults inside a reply end it cleanly, and what users see of backends is not an address
(SPEC F5, F6, N3, N4; issue: hardening, items 1, 11, 15, 16 and the flapping backend)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.engine import make_url

from kynsey.catalog.reload import reload_catalog
from kynsey.storage.text import storable
from tests.live import eventually
from tests.servers.fake_openai import FakeOpenAI
from tests.sse import events, text_of
from tests.test_audit_chain import sql
from tests.test_chat import chat_requests, new_conversation, send

STANDARD, PRO = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct"


def stored_messages(client, cid: str) -> list[dict]:
    return client.get(f"/api/conversations/{cid}").json()["messages"]


@pytest.mark.parametrize(
    "line", [b'{"message":"oops","done":false}\n', b'{"message":{"role":"assistant","content":5},"done":false}\n',
             b'{"message":{"role":"assistant","content":" x"},"done":"yes"}\n']  # not the end: the wrong shape
)
def test_a_malformed_backend_line_ends_the_reply_with_stream_broken_and_keeps_its_text(server, fake_ollama, line):
    client = server.client(server.add_user("alice", "pro"))
    fake_ollama.fail[STANDARD] = "malformed"
    fake_ollama.malformed_line = line
    cid = new_conversation(client)
    evts = send(client, cid, "one two three")
    assert evts[-1][0] == "error" and evts[-1][1]["code"] == "stream_broken", evts[-1]
    reply = stored_messages(client, cid)[-1]
    assert (reply["status"], reply["content"]) == ("interrupted", text_of(evts)) and text_of(evts) == "Echo: one"
    del fake_ollama.fail[STANDARD]
    assert send(client, cid, "again")[-1][0] == "done"  # the conversation is not stuck


def test_an_error_that_is_null_is_no_error(server, fake_ollama):
    """Before, ``"error": null`` stopped the reply with 'the backend stopped the reply: None'."""
    client = server.client(server.add_user("alice", "pro"))
    fake_ollama.fail[STANDARD] = "malformed"
    fake_ollama.malformed_line = b'{"message":{"role":"assistant","content":" two"},"done":false,"error":null}\n'
    cid = new_conversation(client)
    evts = send(client, cid, "one two three")
    assert evts[-1][0] == "done" and text_of(evts) == "Echo: one two", evts[-1]
    assert stored_messages(client, cid)[-1]["content"] == "Echo: one two"


def test_a_line_that_never_ends_stops_the_reply_with_stream_broken_and_keeps_its_text(server, fake_ollama):
    """A backend that sends bytes with no end of line had them all kept, until memory ran out.
    Past ``MAX_LINE_BYTES`` (1 MiB) the reply ends 'stream_broken', its text kept."""
    client = server.client(server.add_user("alice", "pro"))
    fake_ollama.fail[STANDARD] = "endless_line"
    cid = new_conversation(client)
    evts = send(client, cid, "one two three")
    assert evts[-1][0] == "error" and evts[-1][1]["code"] == "stream_broken", evts[-1]
    assert "longer than 1 MiB" in evts[-1][1]["message"]
    reply = stored_messages(client, cid)[-1]
    assert (reply["status"], reply["content"]) == ("interrupted", text_of(evts)) and text_of(evts) == "Echo: one"


@pytest.mark.parametrize("text, kept", [("plain", "plain"), ("é ✓ 😀", "é ✓ 😀"), ("a\x00b", "a\ufffdb"),
                                         ("é\ud800", "é\ufffd"), ("\udfff\x00", "\ufffd\ufffd")])
def test_storable_text_replaces_only_what_no_database_can_store(text, kept):
    assert storable(text) == kept


def test_a_nul_from_a_model_is_shown_and_saved_as_a_replacement_character_and_stops_nothing(server, fake_ollama):
    """PostgreSQL cannot store NUL in text. Relayed as is, it failed every save of the
    instance's replies, so each later reply there ended 'database_unavailable'. A
    model's NUL (valid JSON: "\\u0000") is shown and saved as U+FFFD, on both databases."""
    client = server.client(server.add_user("alice", "pro"))
    fake_ollama.reply, fake_ollama.token_delay = "a b\x00c d e f g h", 0.05  # past a flush or two
    cid = new_conversation(client)
    evts = send(client, cid, "go")
    assert evts[-1][0] == "done" and text_of(evts) == "a b\ufffdc d e f g h", evts[-1]
    reply = stored_messages(client, cid)[-1]
    assert (reply["status"], reply["content"]) == ("complete", text_of(evts))
    fake_ollama.reply = " ".join(f"w{i}" for i in range(20))  # the next reply is saved while it streams
    assert send(client, new_conversation(client), "again")[-1][0] == "done"


REFUSE_ON = {  # the database itself refuses a row: a trigger on the text of one reply
    "postgresql": [
        "CREATE FUNCTION kynsey_test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF NEW.content LIKE '%poison%' THEN RAISE EXCEPTION 'this text is refused'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER kynsey_test_refuse BEFORE UPDATE ON messages FOR EACH ROW EXECUTE FUNCTION kynsey_test_refuse()",
    ],
    "sqlite": ["CREATE TRIGGER kynsey_test_refuse BEFORE UPDATE ON messages WHEN NEW.content LIKE '%poison%' "
               "BEGIN SELECT RAISE(ABORT, 'this text is refused'); END"],
}
REFUSE_OFF = {"postgresql": ["DROP TRIGGER kynsey_test_refuse ON messages", "DROP FUNCTION kynsey_test_refuse()"],
              "sqlite": ["DROP TRIGGER kynsey_test_refuse"]}


def run_sql(db_url: str, statements: dict[str, list[str]]) -> None:
    for statement in statements[make_url(db_url).get_backend_name()]:
        sql(db_url, statement)


def test_a_reply_the_database_refuses_stops_alone_and_the_others_are_saved(start_server, fake_ollama, db_url):
    """The database answers, but refuses one reply's text (here a trigger; a value it cannot
    store would do the same). That is no outage: the others go on streaming and are saved,
    the refused one stops with 'database_refused', and its row ends 'interrupted' with the
    text saved before the refusal (no row stays 'streaming')."""
    server = start_server(ollama_host=fake_ollama.url, chat_flush_seconds=0.05)
    client = server.client(server.add_user("alice", "pro"))
    fake_ollama.token_delay = 0.03
    clean_words = " ".join(f"w{i}" for i in range(50))
    poisoned_words = "a b c d e f poison " + " ".join(f"p{i}" for i in range(30))  # a flush meets it mid-reply
    run_sql(db_url, REFUSE_ON)
    try:
        with ThreadPoolExecutor(2) as pool:
            clean, poisoned = (new_conversation(client) for _ in range(2))
            replies = [pool.submit(send, client, cid, words) for cid, words in ((clean, clean_words), (poisoned, poisoned_words))]
            clean_evts, poisoned_evts = (reply.result() for reply in replies)
        assert clean_evts[-1][0] == "done" and text_of(clean_evts) == f"Echo: {clean_words}", clean_evts[-1]
        assert poisoned_evts[-1][0] == "error" and poisoned_evts[-1][1]["code"] == "database_refused", poisoned_evts[-1]
        reply = stored_messages(client, clean)[-1]
        assert (reply["status"], reply["content"]) == ("complete", f"Echo: {clean_words}")

        def ended_row():  # once the reply has left memory, the row is what the page shows
            m = stored_messages(client, poisoned)[-1]
            return m if m["status"] == "interrupted" and "poison" not in m["content"] else None

        kept = eventually(ended_row, "the refused reply's row ended with the text saved before the refusal")
        assert text_of(poisoned_evts).startswith(kept["content"]) and kept["error"] == poisoned_evts[-1][1]["message"]
        assert send(client, new_conversation(client), "after")[-1][0] == "done"  # the instance is not stuck
    finally:
        run_sql(db_url, REFUSE_OFF)


OPENAI_CATALOG = """
default_tier = "standard"
[backends.llamacpp]
kind = "openai"
hosts = ["{url}"]
[plans.standard]
grants = ["standard"]
[[tiers]]
tier = "standard"
display_name = "Standard"
internal_name = "KYNSEY Mini"
model_id = "mini"
backend = "llamacpp"
"""


def openai_server(start_server, tmp_path, fake: FakeOpenAI, **settings):
    """A Kynsey server whose one tier, 'standard', is ``fake``'s model 'mini'."""
    path = tmp_path / "tiers.toml"
    path.write_text(OPENAI_CATALOG.format(url=fake.url))
    server = start_server(tiers=path, **settings)
    server.refresh_status()
    return server


def openai_chat(start_server, tmp_path, fake: FakeOpenAI, **settings) -> tuple:
    """On ``openai_server``: a user's client, and a new conversation."""
    server = openai_server(start_server, tmp_path, fake, **settings)
    client = server.client(server.add_user("sam", "standard"))
    return client, new_conversation(client)


def test_a_stream_cut_with_done_but_no_finish_reason_is_interrupted_not_complete(start_server, tmp_path):
    with FakeOpenAI(models=["mini"]) as fake:
        client, cid = openai_chat(start_server, tmp_path, fake)
        fake.fail["mini"] = "cut_done"
        evts = send(client, cid, "one two three")
        assert evts[-1][0] == "error" and evts[-1][1]["code"] == "stream_broken"
        assert stored_messages(client, cid)[-1]["status"] == "interrupted"
        del fake.fail["mini"]
        evts = send(client, cid, "one two three")
        assert evts[-1][0] == "done" and stored_messages(client, cid)[-1]["status"] == "complete"


def test_an_event_that_never_ends_stops_the_reply_with_stream_broken_and_keeps_its_text(start_server, tmp_path):
    """An OpenAI-compatible server that sends data lines without the blank line that ends an event
    had them all kept, until memory ran out. Past ``MAX_LINE_BYTES`` (1 MiB) of one event's data
    the reply ends 'stream_broken', its text kept."""
    with FakeOpenAI(models=["mini"]) as fake:
        client, cid = openai_chat(start_server, tmp_path, fake)
        fake.fail["mini"] = "endless_event"
        evts = send(client, cid, "one two three")
        assert evts[-1][0] == "error" and evts[-1][1]["code"] == "stream_broken", evts[-1]
        assert "an event longer than 1 MiB" in evts[-1][1]["message"]
        reply = stored_messages(client, cid)[-1]
        assert (reply["status"], reply["content"]) == ("interrupted", text_of(evts)) and text_of(evts) == "Echo: one"


@pytest.mark.parametrize("line", [
    b'error: {"code":500,"message":"the context is full","type":"server_error"}\n\n',  # llama.cpp's server until 2025-09
    b'event: error\ndata: {"message":"the context is full"}\n\n',  # only the event's name says it is an error
])
def test_an_error_event_mid_stream_stops_the_reply_with_its_message(start_server, tmp_path, line):
    """Before, both were skipped, and the reply ended 'done' as if nothing had gone wrong."""
    with FakeOpenAI(models=["mini"]) as fake:
        client, cid = openai_chat(start_server, tmp_path, fake)
        fake.fail["mini"], fake.malformed_line = "malformed", line
        evts = send(client, cid, "one two three")
        assert evts[-1] == ("error", {"code": "stream_broken", "message": "the reply was cut off: the backend stopped "
                                                                          "the reply: the context is full"}), evts[-1]
        reply = stored_messages(client, cid)[-1]
        assert (reply["status"], reply["content"]) == ("interrupted", "Echo: one") and text_of(evts) == "Echo: one"


@pytest.mark.parametrize("mode", ["context_full", "context_size"])
def test_a_prompt_longer_than_the_context_is_the_requests_fault_not_the_models(start_server, tmp_path, mode):
    """An OpenAI-compatible server refuses a conversation longer than its context (400). Counted as the
    model's failure, three such messages from one user opened its circuit and paused it for everyone."""
    with FakeOpenAI(models=["mini"]) as fake:
        client, cid = openai_chat(start_server, tmp_path, fake)
        fake.fail["mini"] = mode
        for _ in range(4):  # one more than circuit_failures
            evts = send(client, cid, "a very long message")
            assert evts[-1][0] == "error" and evts[-1][1]["code"] == "prompt_too_long", evts[-1]
            assert "longer than the model's context" in evts[-1][1]["message"]
        del fake.fail["mini"]
        assert send(client, cid, "a short one")[-1][0] == "done"  # the circuit stayed closed
        assert [t["status"] for t in client.get("/api/models/tiers").json()["tiers"]] == ["ready"]


def test_an_openai_backend_is_not_probed_while_it_streams(start_server, tmp_path):
    """A probe would cut llama.cpp's server's running stream: the host with a live stream is known up."""
    with FakeOpenAI(models=["mini"]) as fake:
        client, cid = openai_chat(start_server, tmp_path, fake, status_refresh=0.05)
        fake.reply = " ".join(f"w{i}" for i in range(40))
        fake.token_delay = 0.02  # 0.8 s of streaming: about 16 refresh intervals
        evts, seen_by_server = [], []
        with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "go"}) as resp:
            for event in events(resp):
                evts.append(event)
                if len(evts) == 21:  # mid-stream, about 0.4 s (8 refresh intervals) after it began
                    seen_by_server = [path for path, _ in fake.requests]
        assert evts[-1][0] == "done" and text_of(evts) == fake.reply
        chat_at = len(seen_by_server) - 1 - seen_by_server[::-1].index("/v1/chat/completions")
        assert "/v1/models" not in seen_by_server[chat_at:]
        assert "/v1/models" in seen_by_server[:chat_at]  # it was probed before the stream


def test_users_never_see_a_backend_host_address_admins_do(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, status_refresh=60)
    server.refresh_status()
    user = server.client(server.add_user("sam", "standard"))
    admin = server.client(server.add_user("root", "pro", admin=True))
    address = fake_ollama.url.split("://")[1]
    fake_ollama.stop()
    cid = new_conversation(user)
    evts = send(user, cid, "hello")
    assert evts[-1][0] == "error" and address not in str(evts)
    for path in ("/api/models/status", "/api/models/tiers", f"/api/conversations/{cid}"):
        body = user.get(path).text
        assert address not in body and "127.0.0.1" not in body, (path, body)
    status = admin.get("/api/models/status").json()
    assert status["backends"][0]["hosts"][0]["url"] == fake_ollama.url
    fake_ollama.start()


def test_a_failed_chat_shows_its_backend_unreachable_at_once(start_server, fake_ollama):
    """No waiting for the next status probe: the tier says 'unreachable' as soon as a chat saw it."""
    server = start_server(ollama_host=fake_ollama.url, status_refresh=3600)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    cid = new_conversation(client)
    fake_ollama.stop()
    assert send(client, cid, "hello")[-1][1]["code"] == "backend_unreachable"
    tiers = {t["tier"]: t["status"] for t in client.get("/api/models/tiers").json()["tiers"]}
    assert tiers == {"standard": "unreachable", "pro": "unreachable", "code": "unreachable"}
    resp = client.post("/api/models/tier", json={"tier": "pro"})
    assert resp.status_code == 503 and resp.json()["error"]["tier_status"] == "unreachable"
    fake_ollama.start()


def test_a_probe_that_finds_the_backend_back_half_opens_the_circuit_at_once(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, circuit_failures=2, circuit_cooldown=3600, status_refresh=3600)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    fake_ollama.fail[PRO] = "busy"
    cid = new_conversation(client)
    for _ in range(2):
        send(client, cid, "x")
    status = {t["tier"]: t["status"] for t in client.get("/api/models/tiers").json()["tiers"]}
    assert status["pro"] == "degraded"
    del fake_ollama.fail[PRO]
    server.refresh_status()  # what the background refresh does: the backend answers, with the model
    server.call(lambda rt: rt._half_open_recovered())
    status = {t["tier"]: t["status"] for t in client.get("/api/models/tiers").json()["tiers"]}
    assert status["pro"] == "ready"  # one trial may go: not degraded for the rest of the cooldown
    evts = send(client, cid, "trial")
    assert evts[0][1]["tier"] == "pro" and evts[-1][0] == "done"
    assert server.call(lambda rt: _state(rt, PRO)) == "closed"


async def _state(rt, model):
    return rt.circuits.state("ollama", model)


def test_a_switch_never_trusts_ready_for_a_model_that_failed_since_its_last_success(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, status_refresh=3600, circuit_failures=5)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    fake_ollama.fail[PRO] = "error_500"
    cid = new_conversation(client)
    send(client, cid, "fails, falls back")  # one failure: the circuit stays closed, the tier still reads 'ready'
    assert client.post("/api/models/tier", json={"tier": "standard"}).status_code == 200
    fake_ollama.fail[PRO] = "load_fail"
    resp = client.post("/api/models/tier", json={"tier": "pro"})  # checked, not trusted: the load fails
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "model_load_failed"
    del fake_ollama.fail[PRO]
    checks = preloads(fake_ollama, PRO)
    assert client.post("/api/models/tier", json={"tier": "pro"}).json()["status"] == "ready"
    assert preloads(fake_ollama, PRO) == checks + 1  # checked once more, and it works: trusted again
    assert client.post("/api/models/tier", json={"tier": "standard"}).status_code == 200
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    assert preloads(fake_ollama, PRO) == checks + 1


def preloads(fake, model: str) -> int:
    return sum(1 for path, body in fake.requests if path == "/api/generate" and body.get("model") == model)


TWO_TIERS = """
default_tier = "standard"
[backends.ollama]
kind = "ollama"
hosts = ["{url}"]
[plans.pro]
grants = ["standard", {code_grant}]
[[tiers]]
tier = "standard"
display_name = "Standard"
internal_name = "KYNSEY Mini"
model_id = "llama3.2:3b-instruct-fp16"
"""
CODE_TIER = """
[[tiers]]
tier = "code"
display_name = "Code"
internal_name = "KYNSEY Code"
model_id = "qwen2.5-coder:7b-instruct"
"""


def test_a_catalog_reload_between_the_reads_of_one_request_cannot_break_it(start_server, fake_ollama, tmp_path):
    """One catalog snapshot per request: a reload that removes the user's tier meanwhile is a clean answer."""
    path = tmp_path / "tiers.toml"
    path.write_text(TWO_TIERS.format(url=fake_ollama.url, code_grant='"code"') + CODE_TIER)
    server = start_server(tiers=path)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    assert client.post("/api/models/tier", json={"tier": "code"}).status_code == 200
    cid = new_conversation(client)

    async def reload_during_the_request(rt):
        original = rt.limiter.hit

        async def hit(*args, **kwargs):  # the rate-limit step sits between the request's reads of the catalog
            rt.limiter.hit = original
            path.write_text(TWO_TIERS.format(url=fake_ollama.url, code_grant=""))
            await reload_catalog(rt, actor="test")
            return await original(*args, **kwargs)

        rt.limiter.hit = hit

    server.call(reload_during_the_request)
    evts = send(client, cid, "hello")
    assert evts[0][1]["tier"] == "code" and evts[-1][0] == "done"  # answered from the request's snapshot
    assert [m["status"] for m in stored_messages(client, cid)] == ["complete", "complete"]
    assert chat_requests(fake_ollama)[-1]["model"] == "qwen2.5-coder:7b-instruct"
    evts = send(client, cid, "next")  # the next request sees the new catalog: 'code' is gone
    assert evts[0][1]["tier"] == "standard" and evts[-1][0] == "done"
