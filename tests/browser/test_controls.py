"""Working without a mouse, and a stale warning that does not linger (issue 10,
items 9 and 10): shortcuts listed in a "?" dialog, every control reachable with
Tab and visibly focused; in light and dark, at desktop and phone sizes."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import LOOKS, add_user, is_phone, log_in, reply, send, shot, use_look

CODE_REPLY = "Sure:\n\n```python\nprint('hi')\n```\n"


def focused(page: Page) -> dict:
    return page.evaluate(
        r"""() => {
            const node = document.activeElement;
            const style = getComputedStyle(node);
            const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
            let text = "";
            while (walker.nextNode()) if (!walker.currentNode.parentElement.closest("[aria-hidden=true]")) text += walker.currentNode.data;
            const name = node.getAttribute("aria-label") || text.trim().replace(/\s+/g, " ").slice(0, 30) || node.id;
            return { name, id: node.id, tag: node.tagName, outline: `${style.outlineStyle} ${style.outlineWidth}` };
        }"""
    )


def tab_through(page: Page, presses: int = 40) -> list[dict]:
    page.evaluate("() => document.activeElement.blur()")
    seen = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        seen.append(focused(page))
    return seen


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=[look[0] for look in LOOKS])
def test_every_control_is_reachable_by_tab_with_a_visible_focus(server, page, fake_ollama, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    fake_ollama.reply = CODE_REPLY
    send(page, "say hi in python")
    expect(reply(page)).to_have_attribute("aria-busy", "false")

    seen = tab_through(page)
    names = [f["name"] for f in seen] + [f["id"] for f in seen]
    expected = ["Skip to the message box", "Keyboard shortcuts", "Log out", "Dark theme", "Change tier", "messages",
                "Copy your message as Markdown", "Edit your message", "python code", "Copy the python code",
                "Copy the reply as Markdown", "Regenerate this reply", "Regenerate with another tier", "messageInput", "Send"]
    if is_phone(viewport):
        expected += ["Conversations"]  # the menu button; the closed drawer's links are out of the tab order
        assert "New chat" not in names and "Delete “say hi in python”" not in names, names
        assert "conversationSearch" not in names, names
    else:
        expected += ["New chat", "conversationSearch", "Rename “say hi in python”", "Delete “say hi in python”"]
    missing = [e for e in expected if not any(n.startswith(e) for n in names)]
    assert not missing, (missing, names)
    for f in seen:
        if f["tag"] != "BODY":  # past the last control the browser's own UI has focus
            assert f["outline"] == "solid 3px", f
    page.keyboard.press("Shift+Tab")
    shot(page, f"40-keyboard-focus-{name}")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=[look[0] for look in LOOKS])
def test_shortcuts_work_and_the_question_mark_lists_them(server, page, fake_ollama, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    box = page.get_by_label("Message", exact=True)
    box.fill("why?")  # "?" in the message box is just a question mark
    expect(page.get_by_role("dialog")).to_be_hidden()
    send(page, "hello")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: hello")

    send_button = page.get_by_role("button", name="Send")
    send_button.focus()
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    rows = dialog.locator("tbody tr")
    expect(rows.locator("th")).to_have_text(
        ["Start a new chat", "Stop the reply being written", "Search conversations", "Go to the message box",
         "Open the tier picker", "Show these shortcuts"])
    expect(rows.nth(1).locator("kbd")).to_have_text(["Esc"])
    expect(rows.nth(0).locator("kbd")).to_have_text(["Alt", "N"])
    shot(page, f"41-shortcuts-{name}")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(send_button).to_be_focused()

    page.keyboard.press("Alt+KeyT")  # the tier picker, on the active tier
    expect(page.get_by_role("radiogroup", name="Model tier")).to_be_visible()
    expect(page.locator('#modelTierSelect [aria-checked="true"]')).to_be_focused()
    shot(page, f"43-tier-picker-{name}")
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name="Change tier")).to_be_focused()
    page.keyboard.press("/")
    expect(box).to_be_focused()
    page.get_by_role("button", name="Log out").focus()
    page.keyboard.press("Shift+Escape")
    expect(box).to_be_focused()

    page.keyboard.press("Alt+KeyN")  # from inside the message box too
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    expect(page.locator("#messages article")).to_have_count(0)
    expect(box).to_be_focused()
    page.get_by_role("button", name="Keyboard shortcuts").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=[look[0] for look in LOOKS])
def test_a_stale_tier_warning_clears_as_soon_as_a_request_succeeds(server, page, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    page.route("**/api/models/tiers", lambda route: route.abort())  # Kynsey unreachable, for this one call
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")  # the page's background poll
    warning = page.locator("#tierError")
    expect(warning).to_have_text("Tier status is out of date. Kynsey does not answer. Check your connection, then try again.")
    shot(page, f"42-stale-{name}")
    page.unroute("**/api/models/tiers")
    send(page, "back?")  # any request that succeeds, long before the next 15 s poll
    expect(warning).to_be_hidden()
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: back?")
