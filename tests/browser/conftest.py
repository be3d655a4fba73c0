"""The page in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real Kynsey server on loopback and the loopback Ollama.

Playwright's sync API keeps an event loop running in the test thread, where
``asyncio.run`` (used by the database fixtures) then refuses to work; so the
browser starts per test, after ``db_url`` has prepared the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
def browser(db_url: str) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator:
    """Open pages in fresh contexts (separate cookies); any uncaught page error, or anything
    the Content-Security-Policy had to block, fails the test: the pages must work under it.
    A test that provokes the policy on purpose empties ``open_page.blocked``."""
    contexts, errors = [], []

    def open_page() -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        page.on("console", lambda msg: _note_blocked(msg, open_page.blocked))
        return page

    open_page.blocked = []
    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
    assert not open_page.blocked, f"the Content-Security-Policy blocked: {open_page.blocked}"


def _note_blocked(message, blocked: list) -> None:
    if message.type == "error" and "Content Security Policy" in message.text:
        blocked.append(message.text)


@pytest.fixture
def page(new_page) -> Page:
    return new_page()
