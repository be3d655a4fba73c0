"""Daily chat controls in the browser (issue 10, items 1, 3, 5 and 10; SPEC F18): stop a reply
(button and Escape), Retry, regenerate from another tier, edit and resend, move between versions,
search and rename conversations; each without a page reload, by keyboard too, in light and dark,
at desktop and phone sizes."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import IDS, LOOKS, add_user, is_phone, log_in, reply, send, shot, use_look, wait_until

LONG = " ".join(f"word{i}" for i in range(3000))  # 3,000 tokens at 30 ms: 90 s unless stopped


def done(page: Page, index: int = -1) -> None:
    expect(reply(page, index)).to_have_attribute("aria-busy", "false")


def user_message(page: Page, index: int = 0):
    return page.locator("#messages article.msg-user").nth(index)


def bodies(page: Page):
    return page.locator("#messages article .msg-body")


def open_drawer(page: Page, viewport: dict) -> None:
    if is_phone(viewport):
        page.get_by_role("button", name="Conversations").click()
        expect(page.locator("#sidebar")).to_be_visible()


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=IDS)
def test_stop_a_long_reply_then_retry_it_as_a_new_version(server, page, fake_ollama, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    fake_ollama.reply, fake_ollama.token_delay = LONG, 0.03
    send(page, "tell me everything")
    expect(reply(page).locator(".msg-body")).to_contain_text("word5")
    stop = page.get_by_role("button", name="Stop the reply")
    expect(stop).to_be_visible()
    shot(page, f"50-stop-streaming-{name}")
    if scheme == "dark":
        page.keyboard.press("Escape")  # focus is still in the message box
    else:
        stop.click()
    answer = reply(page)
    expect(answer.locator(".msg-state")).to_contain_text("Stopped. You stopped this reply; what it wrote is kept.")
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible()
    wait_until(lambda: fake_ollama.clients_gone == 1, "the fake Ollama to see its chat request closed")
    kept = answer.locator(".msg-body").inner_text()
    assert kept.startswith("word0 word1") and "word2999" not in kept
    shot(page, f"51-stopped-{name}")

    fake_ollama.reply, fake_ollama.token_delay = "A short answer this time.", 0.0
    answer.get_by_role("button", name="Retry this reply").click()
    expect(reply(page).locator(".msg-body")).to_have_text("A short answer this time.")
    versions = reply(page).get_by_role("group", name="Version 2 of 2")
    expect(versions).to_be_visible()
    versions.get_by_role("button", name="Previous version").click()
    expect(reply(page).get_by_role("group", name="Version 1 of 2")).to_be_visible()
    expect(reply(page).locator(".msg-state")).to_contain_text("Stopped.")
    expect(reply(page).locator(".msg-body")).to_have_text(kept)
    expect(reply(page).get_by_role("button", name="Next version")).to_be_focused()
    shot(page, f"52-versions-{name}")
    page.reload()  # what the page showed is what the server keeps
    expect(reply(page).get_by_role("group", name="Version 1 of 2")).to_be_visible()


def tier_list_after_a_reply(new_page, server, user: str, plan: str, scheme: str, viewport: dict) -> Page:
    """A page of ``user``'s with one reply, its list of other tiers open."""
    add_user(server, user, plan)
    page = new_page()
    log_in(page, server, user)
    use_look(page, scheme, viewport)
    send(page, "compare tiers")
    done(page)
    reply(page).get_by_role("button", name="Regenerate with another tier").click()
    return page


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=IDS)
def test_regenerate_from_another_tier_and_a_locked_one_offers_the_upgrade(server, new_page, fake_ollama, name, scheme, viewport):
    page = tier_list_after_a_reply(new_page, server, "alice", "pro", scheme, viewport)
    choices = reply(page).get_by_role("group", name="Regenerate with")
    expect(choices.get_by_role("button")).to_have_count(3)
    expect(choices.get_by_role("button").first).to_be_focused()
    shot(page, f"53-tier-menu-{name}")
    choices.get_by_role("button", name="Regenerate with Pro").click()
    done(page)
    expect(reply(page).locator(".tier-tag")).to_have_text("Pro")
    expect(reply(page).get_by_role("group", name="Version 2 of 2")).to_be_visible()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Standard")  # a one-off: the active tier stays
    expect(page.locator("#messages article")).to_have_count(2)

    other = tier_list_after_a_reply(new_page, server, "bob", "standard", scheme, viewport)
    locked = reply(other).get_by_role("button", name=re.compile(r"^Regenerate with Pro \(locked"))
    locked.click()
    card = other.locator("#upgradeCard")
    expect(card).to_be_visible()
    expect(card).to_contain_text("Pro comes with the Pro plan")
    expect(other.locator("#messages article")).to_have_count(2)  # nothing was sent
    shot(other, f"58-locked-regenerate-{name}")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=IDS)
def test_edit_a_question_and_move_between_its_versions(server, page, fake_ollama, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    send(page, "first question")
    done(page)
    send(page, "second question")
    done(page)
    user_message(page, 0).get_by_role("button", name="Edit your message").click()
    box = page.get_by_role("textbox", name="Edit your message")
    expect(box).to_be_focused()
    expect(box).to_have_value("first question")
    box.fill("first question, edited")
    shot(page, f"54-edit-box-{name}")
    box.press("Enter")
    done(page)
    expect(bodies(page)).to_have_text(["first question, edited", "Echo: first question, edited"])
    expect(user_message(page, 0).get_by_role("group", name="Version 2 of 2")).to_be_visible()
    shot(page, f"55-edited-{name}")
    user_message(page, 0).get_by_role("button", name="Previous version").click()
    expect(bodies(page)).to_have_text(["first question", "Echo: first question", "second question", "Echo: second question"])
    user_message(page, 0).get_by_role("button", name="Next version").press("Enter")  # by keyboard too
    expect(bodies(page)).to_have_text(["first question, edited", "Echo: first question, edited"])

    user_message(page, 0).get_by_role("button", name="Edit your message").click()
    page.get_by_role("textbox", name="Edit your message").press("Escape")  # cancels; nothing is sent
    expect(page.get_by_role("textbox", name="Edit your message")).to_have_count(0)
    expect(user_message(page, 0).get_by_role("button", name="Edit your message")).to_be_focused()
    expect(page.locator("#messages article")).to_have_count(2)


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=IDS)
def test_search_and_rename_conversations(server, page, fake_ollama, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    for text in ("Packing list for Lisbon", "Weekend plans"):
        page.keyboard.press("Alt+KeyN")
        send(page, text)
        done(page)
    fake_ollama.reply = "Pack light: the trams in Lisbon are small and the hills are steep."
    page.keyboard.press("Alt+KeyN")
    send(page, "What should I bring?")
    done(page)

    page.keyboard.press("Alt+KeyK")  # search, from anywhere (on a phone it opens the drawer)
    search = page.get_by_role("searchbox", name="Search conversations")
    expect(search).to_be_focused()
    search.fill("lisbon")
    links = page.locator("#conversationList .conv-open")
    expect(links.locator(".conv-name")).to_have_text(["What should I bring?", "Packing list for Lisbon"])
    expect(links.first.locator(".conv-snippet")).to_contain_text("trams in Lisbon")
    shot(page, f"56-search-{name}")
    search.fill("no such words")
    expect(page.locator("#conversationList")).to_have_text("No conversation mentions “no such words”.")
    search.press("Escape")  # clears the search
    expect(search).to_have_value("")
    expect(links).to_have_count(3)

    page.get_by_role("button", name="Rename “Weekend plans”").click()
    title = page.get_by_role("textbox", name="New title for “Weekend plans”")
    expect(title).to_be_focused()
    title.fill("Trip to Porto")
    shot(page, f"57-rename-{name}")
    title.press("Enter")
    expect(links.locator(".conv-name")).to_have_text(["What should I bring?", "Trip to Porto", "Packing list for Lisbon"])
    expect(page.get_by_role("button", name="Rename “Trip to Porto”")).to_be_focused()
    page.get_by_role("button", name="Rename “Trip to Porto”").press("Enter")
    page.get_by_role("textbox", name="New title for “Trip to Porto”").press("Escape")  # cancels
    expect(links.locator(".conv-name")).to_have_text(["What should I bring?", "Trip to Porto", "Packing list for Lisbon"])
    links.filter(has_text="Trip to Porto").click()
    expect(page.get_by_role("heading", name="Trip to Porto")).to_be_visible()
    expect(bodies(page)).to_have_text(["Weekend plans", "Echo: Weekend plans"])


@pytest.mark.parametrize("name, scheme, viewport", LOOKS[::3], ids=IDS[::3])
def test_a_refused_first_message_leaves_no_conversation_and_keeps_the_draft(start_server, fake_ollama, page, name, scheme, viewport):
    server = start_server(ollama_host=fake_ollama.url, chat_rate_limit="1/minute")
    server.refresh_status()
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    send(page, "one")
    done(page)
    page.keyboard.press("Alt+KeyN")
    send(page, "two")
    expect(page.locator("#chatError")).to_have_text(re.compile(r"^Too many messages - try again in \d+ s\.$"))
    expect(page.get_by_label("Message", exact=True)).to_have_value("two")
    expect(page.locator("#messages article")).to_have_count(0)
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    shot(page, f"59-first-message-refused-{name}")
    open_drawer(page, viewport)
    expect(page.locator("#conversationList .conv-open")).to_have_count(1)
    page.reload()
    open_drawer(page, viewport)
    expect(page.locator("#conversationList .conv-open")).to_have_text(["one"])

    page.locator("#conversationList .conv-open").click()  # an edit refused the same way keeps its text
    user_message(page).get_by_role("button", name="Edit your message").click()
    page.get_by_role("textbox", name="Edit your message").fill("one, edited")
    page.get_by_role("textbox", name="Edit your message").press("Enter")
    expect(page.locator("#chatError")).to_have_text(re.compile(r"^Too many messages"))
    expect(page.get_by_role("textbox", name="Edit your message")).to_have_value("one, edited")
    expect(page.locator("#messages article")).to_have_count(2)


def test_a_first_message_sent_while_the_page_still_loads_is_not_wiped(server, page, fake_ollama):
    """The page opens the conversation named in its address once its list has loaded; a first
    message sent before that (no address yet) must stay, and become that conversation."""
    add_user(server, "alice", "pro")
    held: dict[str, list] = {"GET": [], "POST": []}
    listing = re.compile(r".*/api/conversations$")


    def hold(route):  # the first list and the first new conversation wait; later requests go through
        waiting = held[route.request.method]
        if waiting:
            route.continue_()
        else:
            waiting.append(route)

    page.route(listing, hold)
    log_in(page, server, "alice")  # the page waits for its conversation list
    send(page, "first")  # the new conversation waits too
    expect(page.locator("#messages article")).to_have_count(2)
    while not (held["GET"] and held["POST"]):
        page.wait_for_timeout(20)  # lets Playwright hand over the requests it holds
    held["GET"][0].continue_()  # the list arrives: the page looks at its address (none yet)
    expect(page.locator("#conversationList")).to_have_text("No conversations yet.")
    held["POST"][0].continue_()
    done(page)
    expect(bodies(page)).to_have_text(["first", "Echo: first"])
    expect(page.locator("#conversationList .conv-open")).to_have_text(["first"])
    assert "#c=" in page.url
