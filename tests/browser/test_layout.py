"""A layout that holds (issue 10, items 2, 6 and 7): the page is one screen tall,
the composer stays pinned and visible, only the message pane scrolls and it
follows a streaming reply unless the reader scrolled up; dark mode follows the
system and remembers a choice; on a phone the conversations are a drawer and the
tier bar is one line. Each in light and dark, at desktop and phone sizes."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import LOOKS, add_user, is_phone, log_in, reply, send, shot, use_look

LONG_REPLY = "\n\n".join(f"Paragraph {i} of many." for i in range(70))
PANE = "#messages"


def pane_figures(page: Page) -> dict:
    return page.evaluate(
        """() => {
            const pane = document.querySelector("#messages");
            const composer = document.querySelector("#composer").getBoundingClientRect();
            return {
                top: pane.scrollTop, height: pane.scrollHeight, client: pane.clientHeight,
                distance: pane.scrollHeight - pane.scrollTop - pane.clientHeight,
                pageHeight: document.scrollingElement.scrollHeight, windowHeight: innerHeight,
                composerBottom: composer.bottom, composerTop: composer.top,
            };
        }"""
    )


def wait_for_growth(page: Page, since: int, pixels: int) -> None:
    page.wait_for_function(f"() => document.querySelector('{PANE}').scrollHeight > {since + pixels}")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=[look[0] for look in LOOKS])
def test_the_composer_stays_pinned_and_the_pane_follows_the_reply_unless_scrolled_up(
    server, page, fake_ollama, name, scheme, viewport
):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    fake_ollama.reply, fake_ollama.token_delay = LONG_REPLY, 0.01
    send(page, "tell me a long story")
    page.wait_for_function(f"() => document.querySelector('{PANE}').scrollHeight > 2.5 * document.querySelector('{PANE}').clientHeight")

    # Following: the newest text stays in view, the page itself never grows.
    figures = pane_figures(page)
    assert figures["distance"] < 30, figures
    assert figures["pageHeight"] <= figures["windowHeight"] and figures["composerBottom"] <= figures["windowHeight"], figures
    expect(page.locator("#jumpLatest")).to_be_hidden()

    # The reader scrolls up: the pane stays where they are while the reply grows.
    page.locator(PANE).hover()
    page.mouse.wheel(0, -figures["client"])
    jump = page.get_by_role("button", name="Jump to latest")
    expect(jump).to_be_visible()
    held = pane_figures(page)
    wait_for_growth(page, held["height"], 400)
    assert abs(pane_figures(page)["top"] - held["top"]) < 2
    shot(page, f"20-scrolled-up-{name}")

    jump.click()
    expect(jump).to_be_hidden()
    assert pane_figures(page)["distance"] < 30
    expect(reply(page)).to_have_attribute("aria-busy", "false", timeout=30_000)
    end = pane_figures(page)
    assert end["distance"] < 30 and end["pageHeight"] <= end["windowHeight"], end
    assert end["composerTop"] >= 0 and end["composerBottom"] <= end["windowHeight"]
    shot(page, f"21-long-reply-{name}")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=[look[0] for look in LOOKS])
def test_dark_mode_follows_the_system_until_the_user_chooses(server, page, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    toggle = page.get_by_role("button", name="Dark theme")
    expect(toggle).to_have_attribute("aria-pressed", str(scheme == "dark").lower())
    background = page.evaluate("() => getComputedStyle(document.documentElement).backgroundColor")
    assert background == ("rgb(13, 17, 23)" if scheme == "dark" else "rgb(246, 247, 249)")
    shot(page, f"22-theme-{name}")

    toggle.click()  # the other theme, remembered
    other = "light" if scheme == "dark" else "dark"
    expect(page.locator("html")).to_have_attribute("data-theme", other)
    expect(toggle).to_have_attribute("aria-pressed", str(other == "dark").lower())
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", other)
    page.emulate_media(color_scheme="dark" if scheme == "light" else "light")
    page.emulate_media(color_scheme=scheme)  # the system flips back and forth: the choice holds
    expect(page.locator("html")).to_have_attribute("data-theme", other)
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using:")
    shot(page, f"23-theme-chosen-{other}-{name}")


@pytest.mark.parametrize("name, scheme, viewport", [look for look in LOOKS if is_phone(look[2])], ids=["light", "dark"])
def test_on_a_phone_the_conversations_are_a_drawer_and_the_tier_bar_one_line(server, page, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    drawer = page.get_by_role("navigation", name="Conversations")
    menu = page.get_by_role("button", name="Conversations")
    send(page, "about cats")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: about cats")
    expect(drawer).to_be_hidden()
    menu.click()
    drawer.get_by_role("button", name="New chat").click()
    expect(drawer).to_be_hidden()
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    send(page, "about dogs")
    expect(reply(page).locator(".msg-body")).to_have_text("Echo: about dogs")

    expect(menu).to_have_attribute("aria-expanded", "false")
    summary = page.locator(".tier-summary").bounding_box()
    toggle = page.get_by_role("button", name="Change tier").bounding_box()
    assert summary["height"] < toggle["height"] + 16, (summary, toggle)  # one line
    composer = page.locator("#composer").bounding_box()
    assert composer["y"] + composer["height"] <= viewport["height"]
    shot(page, f"24-phone-{name}")

    menu.click()
    expect(drawer).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "true")
    expect(drawer.locator("a[aria-current=page]")).to_be_focused()
    page.wait_for_function("() => getComputedStyle(document.querySelector('#sidebar')).transform === 'none'")  # slid in
    shot(page, f"25-phone-drawer-{name}")
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    expect(menu).to_be_focused()

    menu.click()
    drawer.get_by_role("link", name="about cats").click()
    expect(drawer).to_be_hidden()
    expect(page.get_by_role("heading", name="about cats")).to_be_visible()
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    menu.click()
    page.locator("#drawerBackdrop").click(position={"x": 370, "y": 400})
    expect(drawer).to_be_hidden()
