"""The upgrade prompt as an offer (issue 10, item 8; SPEC F19), the user's side.

The server side (``/api/upgrade-requests``, stored, audited, decided on the admin
page) is built on another branch. Until it is merged here, the first test runs
the card against a stand-in route that speaks exactly that API, added to the
real app in this test only; the second runs against the real API and skips
itself while that route does not exist yet."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi import Body
from fastapi.responses import JSONResponse
from playwright.sync_api import Page, expect

from kynsey.web.deps import UserDep
from tests.browser.pages import LOOKS, add_user, log_in, open_selector, option, shot, use_look

PATH = "/api/upgrade-requests"


def stand_in_upgrade_api(server) -> list[dict]:
    """POST and GET /api/upgrade-requests as agreed, over a list the test can decide on."""
    store: list[dict] = []

    async def create(user: UserDep, body: dict = Body(...)) -> JSONResponse:
        mine = [r for r in store if r["user"] == user.name]
        if any(r["status"] == "pending" for r in mine):
            return JSONResponse({"error": {"code": "conflict", "message": "a request is pending"}}, status_code=409)
        request = {"id": len(store) + 1, "user": user.name, "plan": body["plan"], "status": "pending",
                   "note": body.get("note"), "created_at": datetime.now(UTC).isoformat(), "decided_at": None,
                   "decided_by": None}
        store.append(request)
        return JSONResponse(public(request), status_code=201)

    async def listing(user: UserDep) -> dict:
        return {"requests": [public(r) for r in reversed(store) if r["user"] == user.name]}

    server.app.router.add_api_route(PATH, create, methods=["POST"])
    server.app.router.add_api_route(PATH, listing, methods=["GET"])
    routes = server.app.router.routes
    routes[:0] = [routes.pop(), routes.pop()]  # ahead of the static files mounted at /
    return store


def public(request: dict) -> dict:
    return {k: v for k, v in request.items() if k != "user"}


def has_upgrade_api(server) -> bool:
    return any(getattr(route, "path", None) == PATH for route in server.app.routes)


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
    store = stand_in_upgrade_api(server)
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
    assert [(r["user"], r["plan"], r["status"]) for r in store] == [("sam", "pro", "pending")]
    shot(page, f"51-upgrade-requested-{name}")

    card.get_by_role("button", name="Not now").click()
    expect(card).to_be_hidden()
    expect(page.get_by_role("button", name="Change tier")).to_be_focused()
    card = offer(page)  # asking again shows the same pending request, no second one
    expect(card.get_by_role("status")).to_contain_text("You asked for the Pro plan on")
    assert len(store) == 1

    store[0].update(status="declined", decided_at=datetime.now(UTC).isoformat(), decided_by="boss")
    recheck(page)
    expect(card.get_by_role("status")).to_contain_text("An admin declined your request")
    card.get_by_role("button", name="Request again").click()
    expect(card.get_by_role("status")).to_contain_text("You asked for the Pro plan on")

    store[1].update(status="approved", decided_at=datetime.now(UTC).isoformat(), decided_by="boss")
    assert admin.put("/api/admin/users/sam/plan", json={"plan": "pro"}).status_code == 200
    recheck(page)
    approved = page.get_by_role("region", name="Pro is now part of your plan")
    expect(approved.get_by_role("status")).to_contain_text("An admin approved your request on")
    expect(page.locator("#userPlan")).to_have_text("pro plan")
    shot(page, f"52-upgrade-approved-{name}")
    approved.get_by_role("button", name="Switch to Pro").click()
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using: Pro")
    expect(approved).to_be_hidden()


def test_without_the_upgrade_api_the_card_says_to_ask_an_admin(server, page):
    if has_upgrade_api(server):
        pytest.skip("this server has the upgrade-request API")
    add_user(server, "sam", "standard")
    log_in(page, server, "sam")
    card = offer(page)
    expect(card.get_by_role("status")).to_have_text(
        "This server does not take upgrade requests yet. Ask an admin to change your plan.")
    expect(card.get_by_role("button", name="Request upgrade")).to_have_count(0)


def test_the_card_against_the_real_upgrade_api(server, page):
    """For the lead: runs by itself once the branch with /api/upgrade-requests is merged."""
    if not has_upgrade_api(server):
        pytest.skip("the upgrade-request API is not on this branch yet")
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
