"""The tier selector in a real browser (SPEC F4, F7, F14): see, switch, locked, unavailable, errors."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser.pages import CODE, PRO, STANDARD, add_user, log_in, open_selector, option, shot, wait_until


def test_log_in_and_see_each_tier_with_its_status(server, page):
    add_user(server, "alice", "pro")
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Log in to Kynsey")).to_be_visible()
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password", exact=True).fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password. Check both, then try again.")
    shot(page, "01-login-error")

    log_in(page, server, "alice")
    display = page.locator("#activeModelDisplay")
    expect(display).to_contain_text("Currently using: Standard")
    expect(display).to_contain_text(STANDARD)
    expect(display.locator(".status")).to_have_attribute("title", "Ready: loaded in memory, answers at once")

    group = open_selector(page)
    expect(group.get_by_role("radio")).to_have_count(3)
    standard = option(page, "standard")
    expect(standard).to_have_attribute("aria-checked", "true")
    expect(standard).to_be_focused()
    expect(standard).to_contain_text("Fast and efficient for everyday tasks")
    expect(standard.locator(".status .visually-hidden")).to_have_text(" (loaded in memory, answers at once)")
    expect(option(page, "pro")).to_contain_text("Stronger reasoning and longer answers for demanding work")
    expect(option(page, "code")).to_contain_text("Writes, explains and reviews code")
    expect(page.get_by_role("radio", name=re.compile(r"^Pro\b"))).to_have_attribute("aria-checked", "false")
    shot(page, "02-selector-open")


def test_opening_the_selector_warms_the_cold_tiers(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    assert not fake_ollama.load_count[PRO] and not fake_ollama.load_count[CODE]
    open_selector(page)
    wait_until(lambda: fake_ollama.load_count[PRO] == 1 and fake_ollama.load_count[CODE] == 1, "both cold tiers to load")
    expect(option(page, "pro").locator(".status-label")).to_have_text("Ready")
    expect(option(page, "code").locator(".status-label")).to_have_text("Ready")


def test_switching_shows_the_loading_state_then_the_new_tier(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    fake_ollama.load_delay = 1.5
    open_selector(page)
    option(page, "pro").click()
    progress = page.locator("#tierProgress")
    expect(progress).to_be_visible()
    expect(progress).to_contain_text("Switching to Pro")
    expect(option(page, "pro")).to_contain_text("Switching…")
    shot(page, "03-switching")
    display = page.locator("#activeModelDisplay")
    expect(display).to_contain_text("Currently using: Pro")
    expect(display).to_contain_text(PRO)
    expect(progress).to_be_hidden()
    expect(page.get_by_role("radiogroup")).to_be_hidden()
    expect(page.locator("#status")).to_have_text(f"Now using Pro ({PRO}).")
    shot(page, "04-switched")


def test_the_selector_works_from_the_keyboard(server, page):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    toggle = page.get_by_role("button", name="Change tier")
    toggle.focus()
    page.keyboard.press("Enter")
    expect(option(page, "standard")).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("ArrowDown")
    expect(option(page, "pro")).to_be_focused()
    page.keyboard.press("End")
    expect(option(page, "code")).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(option(page, "standard")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.get_by_role("radiogroup")).to_be_hidden()
    expect(toggle).to_be_focused()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    page.keyboard.press("Space")
    page.keyboard.press("ArrowUp")
    expect(option(page, "code")).to_be_focused()
    page.keyboard.press("Space")
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Code")
    expect(toggle).to_be_focused()
    page.keyboard.press("Enter")
    expect(option(page, "code")).to_have_attribute("aria-checked", "true")
    expect(option(page, "code")).to_be_focused()


def test_a_202_warming_switch_shows_progress_until_the_model_is_ready(start_server, fake_ollama, page):
    server = start_server(ollama_host=fake_ollama.url, switch_warm_wait=0.1)
    server.refresh_status()
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    fake_ollama.load_delay = 2.5
    open_selector(page)
    option(page, "pro").click()
    progress = page.locator("#tierProgress")
    expect(progress).to_contain_text("Pro is warming up")
    display = page.locator("#activeModelDisplay")
    expect(display).to_contain_text("Currently using: Pro")
    expect(display.locator(".status-label")).to_have_text("Warming up")
    shot(page, "05-warming")
    expect(display.locator(".status-label")).to_have_text("Ready")
    expect(progress).to_be_hidden()
    expect(page.locator("#status")).to_have_text(f"Now using Pro ({PRO}).")


def test_a_locked_tier_shows_the_upgrade_prompt(server, page, fake_ollama):
    add_user(server, "sam", "standard")
    log_in(page, server, "sam")
    open_selector(page)
    pro = option(page, "pro")
    expect(pro).to_have_attribute("aria-disabled", "true")
    expect(pro.locator(".badge-locked")).to_have_text("Locked")
    prompt = "Pro is part of the Pro plan. Your plan is Standard: upgrade to use it."
    expect(pro.locator(".note-upgrade")).to_have_text(prompt)
    expect(option(page, "code").locator(".note-upgrade")).to_contain_text("Code is part of the Pro plan.")
    pro.click(force=True)  # aria-disabled, yet a click must explain why: the upgrade card (test_upgrade_card.py)
    expect(page.get_by_role("heading", name="Pro comes with the Pro plan")).to_be_visible()
    expect(page.locator("#tierError")).to_be_hidden()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Standard")
    shot(page, "06-locked")
    assert not fake_ollama.load_count[PRO], "a locked tier is never warmed"


def test_an_unavailable_tier_is_disabled_with_its_reason(server, page, fake_ollama):
    add_user(server, "alice", "pro")
    del fake_ollama.models[PRO]
    server.refresh_status()
    log_in(page, server, "alice")
    open_selector(page)
    pro = option(page, "pro")
    expect(pro).to_have_attribute("aria-disabled", "true")
    expect(pro.locator(".status")).to_have_attribute("title", "Missing: its model is not installed on the server")
    expect(pro.locator(".note-unavailable")).to_contain_text(f"Unavailable: {PRO} is not installed")
    expect(pro.locator(".note-unavailable")).to_contain_text("Pick another tier, or ask an admin to install its model.")
    pro.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#tierError")).to_contain_text("Pro can't be used right now")
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Standard")
    shot(page, "07-unavailable")


def test_too_many_switches_says_when_to_try_again(start_server, fake_ollama, page):
    server = start_server(ollama_host=fake_ollama.url, switch_rate_limit="1/minute")
    server.refresh_status()
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    open_selector(page)
    option(page, "pro").click()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Pro")
    open_selector(page)
    option(page, "code").click()
    expect(page.locator("#tierError")).to_have_text(re.compile(r"^Too many switches - try again in \d+ s\.$"))
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Pro")
    shot(page, "08-rate-limited")


def test_switching_turned_off_hides_the_selector(server, page):
    add_user(server, "alice", "pro")
    server.call(lambda rt: rt.flags.set("model_switching", actor="test", state="off"))
    log_in(page, server, "alice")
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Standard")
    expect(page.get_by_role("button", name="Change tier")).to_be_hidden()
    expect(page.get_by_role("radiogroup")).to_be_hidden()
