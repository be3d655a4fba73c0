"""Steps the browser tests share: log in, open the selector, wait, take screenshots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.live import eventually

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
STANDARD, PRO, CODE = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct", "qwen2.5-coder:7b-instruct"


def add_user(server, name: str, plan: str = "pro", *, admin: bool = False) -> str:
    return server.add_user(name, plan, admin=admin, password=PASSWORD)


def log_in(page: Page, server, name: str) -> None:
    page.goto(server.url + "/")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using:")
    expect(page.locator("#userName")).to_have_text(name)


def open_selector(page: Page) -> Locator:
    page.get_by_role("button", name="Change tier").click()
    group = page.get_by_role("radiogroup", name="Model tier")
    expect(group).to_be_visible()
    return group


def option(page: Page, slug: str) -> Locator:
    return page.locator(f'#modelTierSelect [data-tier="{slug}"]')


def reply(page: Page, index: int = -1) -> Locator:
    replies = page.locator("#messages article.msg-assistant")
    return replies.last if index == -1 else replies.nth(index)


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def shot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# Every new page feature is checked in each of these: (name, colour scheme, viewport).
LOOKS = [
    ("desktop-light", "light", {"width": 1280, "height": 800}),
    ("desktop-dark", "dark", {"width": 1280, "height": 800}),
    ("phone-light", "light", {"width": 390, "height": 844}),
    ("phone-dark", "dark", {"width": 390, "height": 844}),
]
IDS = [look[0] for look in LOOKS]


def use_look(page: Page, scheme: str, viewport: dict) -> None:
    """The system colour scheme and the window size; the page follows both live."""
    page.set_viewport_size(viewport)
    page.emulate_media(color_scheme=scheme)
    expect(page.locator("html")).to_have_attribute("data-theme", scheme)


def is_phone(viewport: dict) -> bool:
    return viewport["width"] < 700


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition outside the page (a request the fake Ollama saw, a row)."""
    eventually(condition, what, timeout, every=0.02)
