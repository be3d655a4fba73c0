"""The chat in a real browser (SPEC F5, F6, F14): streamed Markdown replies
labelled with their tier, switching mid-conversation, re-attaching after a
reload, fallback notes, and errors in words."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from sqlalchemy import delete, text

from kynsey.errors import KynseyError
from kynsey.storage.models import WebSession
from kynsey.web.errors import HTTP_CODES
from tests.browser.pages import PRO, STANDARD, add_user, log_in, open_selector, option, reply, send, shot
from tests.test_reply_faults import REFUSE_OFF, REFUSE_ON

CODE_REPLY = "Here is a function:\n\n```python\ndef add(a, b):\n    return a + b\n```\n\nIt **adds** two numbers."


def chats_for(fake_ollama, model: str) -> list[list[str]]:
    return [[m["content"] for m in body["messages"]] for path, body in fake_ollama.requests
            if path == "/api/chat" and body.get("model") == model and body.get("messages")]


def test_a_reply_streams_in_as_markdown_labelled_with_its_tier(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    fake_ollama.reply, fake_ollama.token_delay = CODE_REPLY, 0.05
    send(page, "Write an add function")
    answer = reply(page)
    expect(answer).to_have_attribute("aria-busy", "true")
    expect(page.get_by_role("button", name="Stop the reply")).to_be_enabled()  # Send is Stop while it writes
    expect(answer.locator("pre code.language-python")).to_have_text("def add(a, b):\n    return a + b\n")
    expect(answer).to_have_attribute("aria-busy", "false")
    expect(answer.locator(".msg-body strong")).to_have_text("adds")
    expect(answer.locator(".tier-tag")).to_have_text("Standard")
    expect(answer.locator(".msg-model")).to_have_text(STANDARD)
    expect(answer.locator(".msg-state")).to_contain_text("tokens")
    expect(page.locator("#messages article.msg-user .msg-body")).to_have_text("Write an add function")
    expect(page.locator("#conversationList .conv-open")).to_have_text(["Write an add function"])
    expect(page.locator("#conversationList .conv-open")).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    shot(page, "09-chat-reply")


def test_switching_mid_conversation_keeps_the_history(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    send(page, "first question")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: first question")
    open_selector(page)
    option(page, "pro").click()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Pro")
    send(page, "second question")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: second question")
    expect(page.locator("#messages .tier-tag")).to_have_text(["Standard", "Pro"])
    assert chats_for(fake_ollama, PRO)[-1] == ["first question", "Echo: first question", "second question"]
    shot(page, "10-switch-mid-conversation")

    page.reload()
    expect(page.locator("#messages .msg-body")).to_have_text(
        ["first question", "Echo: first question", "second question", "Echo: second question"]
    )
    expect(page.locator("#messages .tier-tag")).to_have_text(["Standard", "Pro"])
    expect(page.locator("#messages .msg-model")).to_have_text([STANDARD, PRO])


def test_a_switch_during_a_reply_does_not_cut_it(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    words = " ".join(f"word{i}" for i in range(20))
    fake_ollama.reply, fake_ollama.token_delay = words, 0.1
    send(page, "take your time")
    expect(reply(page)).to_contain_text("word2")
    open_selector(page)
    option(page, "pro").click()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Pro")
    first = reply(page)
    expect(first.locator(".msg-body")).to_have_text(words)
    expect(first.locator(".tier-tag")).to_have_text("Standard")
    fake_ollama.token_delay = 0
    fake_ollama.reply = None
    send(page, "and now?")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: and now?")
    expect(page.locator("#messages .tier-tag")).to_have_text(["Standard", "Pro"])


def test_reloading_during_a_reply_re_attaches_to_it(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    words = " ".join(f"word{i}" for i in range(30))
    fake_ollama.reply, fake_ollama.token_delay = words, 0.1
    send(page, "count slowly")
    expect(reply(page)).to_contain_text("word3")
    page.reload()
    answer = reply(page)
    expect(answer).to_have_attribute("aria-busy", "true")
    expect(answer).to_contain_text("word1")
    shot(page, "11-reattached")
    expect(answer.locator(".msg-body")).to_have_text(words)
    expect(answer).to_have_attribute("aria-busy", "false")
    expect(answer.locator(".msg-state")).to_contain_text("tokens")


def test_a_fallback_reply_says_which_tier_answered_and_why(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    open_selector(page)
    option(page, "pro").click()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Pro")
    fake_ollama.fail[PRO] = "busy"
    send(page, "hello")
    answer = reply(page)
    expect(answer.locator(".msg-body")).to_have_text("Echo: hello")
    expect(answer.locator(".tier-tag")).to_have_text("Standard")
    expect(answer.locator(".fallback-note")).to_contain_text("Answered by Standard because Pro could not answer")
    shot(page, "12-fallback")


def test_a_dead_backend_is_explained_in_place(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    fake_ollama.stop()
    server.refresh_status()
    send(page, "are you there?")
    answer = reply(page)
    expect(answer.locator(".msg-state")).to_contain_text("The model server does not answer. Try again in a minute")
    expect(answer).to_have_attribute("aria-busy", "false")
    display = page.locator("#activeModelDisplay")
    expect(display.locator(".status-label")).to_have_text("Unreachable")
    open_selector(page)
    expect(option(page, "pro")).to_have_attribute("aria-disabled", "true")
    expect(option(page, "pro").locator(".note-unavailable")).to_contain_text("Try again in a minute, or pick another tier.")
    page.keyboard.press("Escape")
    shot(page, "13-backend-down")


def test_a_reply_the_database_refuses_is_explained_in_place(start_server, page, fake_ollama):
    """A real refusal (a trigger on the reply's text): the reply says in words why it stopped,
    and after a reload the saved row says the same."""
    server = start_server(ollama_host=fake_ollama.url, chat_flush_seconds=0.05)
    server.refresh_status()
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    # A second of tokens after the poisoned one: a flush (every 0.05 s) meets it mid-reply even on a busy machine.
    words = " ".join(f"w{i}" for i in range(30))
    fake_ollama.reply, fake_ollama.token_delay = f"one two three poison {words}", 0.03
    server.call(lambda rt: run_statements(rt, REFUSE_ON))
    try:
        send(page, "hello")
        answer = reply(page)
        expect(answer).to_have_attribute("aria-busy", "false")
        expect(answer.locator(".msg-state")).to_contain_text(
            "Interrupted. The database refused to save the rest of this reply, so it stopped. Retry writes a new version.")
        shot(page, "38-database-refused")
        page.reload()
        expect(reply(page).locator(".msg-state")).to_contain_text("the database refuses to store this reply")
    finally:
        server.call(lambda rt: run_statements(rt, REFUSE_OFF))


async def run_statements(rt, statements: dict[str, list[str]]) -> None:
    """On the server's loop: this thread's browser loop keeps ``asyncio.run`` (``run_sql``) out (conftest)."""
    async with rt.engine.begin() as conn:
        for statement in statements[rt.engine.dialect.name]:
            await conn.execute(text(statement))


# Codes that only a bug would send the page (or only the admin's catalog reload), where the generic words do.
GENERIC = {"internal", "bad_request", "method_not_allowed", "http_error", "invalid_catalog"}
STREAM_CODES = {"database_refused", "shutdown", "deleted"}  # only ever in a reply stream's error event (chat/)
WEB_CODES = {*HTTP_CODES.values(), "http_error", "invalid_catalog", "database_busy", "database_unavailable"}


def error_codes(cls: type = KynseyError) -> set[str]:
    return {cls.code}.union(*(error_codes(sub) for sub in cls.__subclasses__()))


def test_every_error_the_server_can_send_has_its_words(server, page):
    """Every code of kynsey/errors.py, of the web layer and of the reply streams has its own words on the
    page, wherever it can surface (a refused message, a reply that stopped, a page that failed to load)."""
    page.goto(server.url + "/")
    codes = sorted(error_codes() | WEB_CODES | STREAM_CODES)
    said = page.evaluate("""async (codes) => {
        const { describeError } = await import("/words.js");
        const out = {};
        for (const code of codes) for (const action of ["chat", "reply", "load"])
            out[`${code} ${action}`] = describeError({ code, message: "what the server said", details: {} }, { action });
        return out;
    }""", codes)
    generic = {key.split()[0] for key, words in said.items() if words.startswith("Something went wrong")}
    assert generic == GENERIC, f"codes without words of their own: {sorted(generic - GENERIC)}"
    assert not [words for words in said.values() if "undefined" in words or "null" in words], said
    assert said["database_unavailable chat"] == ("Kynsey's database does not answer, so your message was not sent. "
                                                 "Try again in a minute.")
    assert "What arrived is saved once it is back" in said["database_unavailable reply"]


def test_too_many_messages_keeps_the_draft_and_says_when(start_server, fake_ollama, page):
    server = start_server(ollama_host=fake_ollama.url, chat_rate_limit="1/minute")
    server.refresh_status()
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    send(page, "one")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: one")
    send(page, "two")
    expect(page.locator("#chatError")).to_have_text(re.compile(r"^Too many messages - try again in \d+ s\.$"))
    expect(page.get_by_label("Message", exact=True)).to_have_value("two")
    expect(page.locator("#messages article")).to_have_count(2)
    shot(page, "14-chat-rate-limited")


def test_an_expired_session_asks_to_log_in_again_and_keeps_the_draft(server, page):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")

    async def expire(rt):
        async with rt.sessions() as db:
            await db.execute(delete(WebSession))
            await db.commit()

    page.get_by_label("Message", exact=True).fill("still there?")
    server.call(expire)
    # The tier poll may find the expiry first and show the login form; either way the
    # draft must survive, so submit the composer whether or not it is still on screen.
    page.locator("#composer").evaluate("form => form.requestSubmit()")
    expect(page.get_by_role("alert")).to_have_text("Your session has expired. Log in again to continue.")
    shot(page, "15-session-expired")
    page.get_by_label("Password", exact=True).fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_label("Message", exact=True)).to_have_value("still there?")


def test_conversations_at_the_side_open_and_delete(server, page):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    send(page, "about cats")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: about cats")
    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    expect(page.locator("#messages article")).to_have_count(0)
    send(page, "about dogs")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: about dogs")
    links = page.locator("#conversationList .conv-open")
    expect(links).to_have_text(["about dogs", "about cats"])

    links.filter(has_text="about cats").click()
    expect(page.get_by_role("heading", name="about cats")).to_be_visible()
    expect(page.locator("#messages .msg-body")).to_have_text(["about cats", "Echo: about cats"])
    expect(links.filter(has_text="about cats")).to_have_attribute("aria-current", "page")
    page.go_back()
    expect(page.locator("#messages .msg-body")).to_have_text(["about dogs", "Echo: about dogs"])

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete “about dogs”").click()
    expect(links).to_have_text(["about cats"])
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    expect(page.get_by_role("button", name="New chat")).to_be_focused()


def test_api_js_offers_the_plans_calls(server, page):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    result = page.evaluate(
        """async () => {
            const api = await import("/api.js");
            const tiers = await api.getModelTiers();
            const status = await api.checkModelAvailability();
            const switched = await api.setModelTier("code");
            return [tiers.active, status.models.map((m) => m.tier), switched.tier, switched.status];
        }"""
    )
    assert result == ["standard", ["standard", "pro", "code"], "code", "ready"]
