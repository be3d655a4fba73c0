"""The upgrade prompt as an offer (issue 10, item 8; SPEC F19), the user's side.

Against the real API (``/api/upgrade-requests``, stored, audited, and decided by
an admin through ``/api/admin/upgrade-requests``)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import LOOKS, add_user, log_in, open_selector, option, shot, use_look

PATH = "/api/upgrade-requests"


def pending(admin) -> list[dict]:
    return admin.get("/api/admin/upgrade-requests", params={"status": "pending"}).json()["requests"]


def offer(page: Page):
    open_selector(page)
    option(page, "pro").click(force=True)  # locked (aria-disabled), yet it opens the offer
    card = page.get_by_role("region", name="Pro comes with the Pro plan")
    expect(card).to_be_visible()
    return card


def recheck(page: Page) -> None:
    """The page's background refresh, now rather than in 15 s."""
    page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=[look[0] for look in LOOKS])
def test_a_locked_tier_offers_its_plan_and_the_request_shows_its_state(server, page, name, scheme, viewport):
    add_user(server, "sam", "standard")
    admin = server.client(server.add_user("boss", "pro", admin=True))
    log_in(page, server, "sam")
    use_look(page, scheme, viewport)

    card = offer(page)
    expect(card.locator("li")).to_have_text([
        "Pro - Stronger reasoning and longer answers for demanding work", "Code - Writes, explains and reviews code"])
    expect(card).to_contain_text("You are on the Standard plan. The Pro plan adds:")
    expect(card.get_by_role("status")).to_have_text("An admin reviews each request; this card shows their answer.")
    expect(page.get_by_role("radiogroup", name="Model tier")).to_be_hidden()
    expect(page.locator("#tierError")).to_be_hidden()  # an offer, not an error
    request = card.get_by_role("button", name="Request upgrade")
    expect(request).to_be_focused()
    shot(page, f"50-upgrade-offer-{name}")

    request.click()
    expect(card.get_by_role("status")).to_contain_text("You asked for the Pro plan on")
    expect(card.get_by_role("button", name="Requested")).to_be_disabled()
    assert [(r["user"], r["plan"], r["status"]) for r in pending(admin)] == [("sam", "pro", "pending")]
    shot(page, f"51-upgrade-requested-{name}")

    card.get_by_role("button", name="Not now").click()
    expect(card).to_be_hidden()
    expect(page.get_by_role("button", name="Change tier")).to_be_focused()
    card = offer(page)  # asking again shows the same pending request, no second one
    expect(card.get_by_role("status")).to_contain_text("You asked for the Pro plan on")
    [first] = pending(admin)

    assert admin.post(f"/api/admin/upgrade-requests/{first['id']}/decline").status_code == 200
    recheck(page)
    expect(card.get_by_role("status")).to_contain_text("An admin declined your request")
    card.get_by_role("button", name="Request again").click()
    expect(card.get_by_role("status")).to_contain_text("You asked for the Pro plan on")

    [second] = pending(admin)
    assert admin.post(f"/api/admin/upgrade-requests/{second['id']}/approve").status_code == 200  # the plan change
    recheck(page)
    approved = page.get_by_role("region", name="Pro is now part of your plan")
    expect(approved.get_by_role("status")).to_contain_text("An admin approved your request on")
    expect(page.locator("#userPlan")).to_have_text("pro plan")
    shot(page, f"52-upgrade-approved-{name}")
    approved.get_by_role("button", name="Switch to Pro").click()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Pro")
    expect(approved).to_be_hidden()


def test_the_card_against_the_real_upgrade_api(server, page):
    """Two tabs of one user: a request made elsewhere shows here, and a second one is refused."""
    add_user(server, "sam", "standard")
    sam = server.client(server.add_user("sam2", "standard"))
    log_in(page, server, "sam")
    card = offer(page)
    card.get_by_role("button", name="Request upgrade").click()
    expect(card.get_by_role("status")).to_contain_text("You asked for the Pro plan on")
    expect(card.get_by_role("button", name="Requested")).to_be_disabled()
    assert sam.post(PATH, json={"plan": "pro"}).status_code == 201
    assert sam.post(PATH, json={"plan": "pro"}).status_code == 409
    page.reload()
    card = offer(page)
    expect(card.get_by_role("status")).to_contain_text("You asked for the Pro plan on")
