"""The admin page in a real browser (SPEC F7, F9, F14): change a plan, read the audit log, either theme."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import (
    IDS,
    LOOKS,
    add_user,
    is_phone,
    log_in,
    open_selector,
    option,
    shot,
    use_look,
    wait_until,
)

# Every colour a chart's canvas holds, as "r,g,b" (getImageData gives colours without premultiplied alpha,
# so the anti-aliased edges of a line or a letter keep its colour).
CANVAS_COLOURS = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const found = new Set();
  for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 100) found.add(`${data[i]},${data[i + 1]},${data[i + 2]}`);
  return [...found];
}"""


def test_an_admin_changes_a_plan_and_the_user_gets_the_tier(server, new_page):
    add_user(server, "root", "pro", admin=True)
    add_user(server, "sam", "standard")
    denied = server.client(server.add_user("ann", "standard")).post("/api/models/tier", json={"tier": "pro"})
    assert denied.status_code == 403

    admin = new_page()
    log_in(admin, server, "root")
    admin.get_by_role("link", name="Admin").click()
    expect(admin).to_have_url(server.url + "/admin.html")
    expect(admin.locator("section#dashboard")).to_have_count(1)  # dashboard.js fills it
    sam = admin.locator('#usersTable tr[data-user="sam"]')
    expect(sam).to_contain_text("standard")
    admin.get_by_label("Plan for sam", exact=True).select_option("pro")
    admin.get_by_role("button", name="Save the plan for sam").click()
    expect(admin.locator("#usersNotice")).to_have_text("sam is now on the pro plan.")
    expect(admin.get_by_label("Plan for sam", exact=True)).to_have_value("pro")
    expect(admin.get_by_label("Plan for sam", exact=True)).to_be_focused()
    first = admin.locator("#auditTable tbody tr").first
    expect(first).to_contain_text("plan_change")
    expect(first).to_contain_text("standard → pro")
    shot(admin, "16-admin")

    filters = admin.locator("#auditFilters")
    filters.get_by_label("Result").select_option("denied")
    admin.get_by_role("button", name="Apply filters").click()
    expect(admin.locator("#auditTable tbody tr")).to_have_count(1)
    expect(admin.locator("#auditTable tbody tr")).to_contain_text("standard → pro")
    expect(admin.locator("#auditTable tbody tr .result")).to_have_text("denied")
    filters.get_by_label("User").fill("sam")
    admin.get_by_role("button", name="Apply filters").click()
    expect(admin.locator("#auditCount")).to_have_text("No entries match these filters.")
    admin.get_by_role("button", name="Clear").click()
    # Everything again: three users added with a token each (6), root's login, ann's refusal, the plan change.
    expect(admin.locator("#auditTable tbody tr")).to_have_count(9)
    shot(admin, "17-admin-audit")

    user = new_page()
    log_in(user, server, "sam")
    open_selector(user)
    expect(option(user, "pro")).to_have_attribute("aria-disabled", "false")
    option(user, "pro").click()
    expect(user.locator("#activeModelDisplay")).to_contain_text("Currently using: Pro")


def test_the_admin_page_refuses_other_users_in_words(server, page):
    add_user(server, "sam", "standard")
    log_in(page, server, "sam")
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()
    page.goto(server.url + "/admin.html")
    expect(page.get_by_role("alert")).to_contain_text("This page is for admins")
    expect(page.locator("#usersSection")).to_be_hidden()


def test_the_dashboard_saves_the_flag_and_verifies_the_audit_chain(server, page):
    add_user(server, "root", "pro", admin=True)
    log_in(page, server, "root")
    page.goto(server.url + "/admin.html")
    dash = page.locator("section#dashboard")
    expect(dash.get_by_role("heading", name="Operations")).to_be_visible()
    expect(dash).to_contain_text("model_switching: on for 100% of users - default")
    dash.get_by_label("State").select_option("percentage")
    dash.get_by_label("Percent").fill("25")
    dash.get_by_label("Allowlist").fill("sam, ann")
    dash.get_by_role("button", name="Save flag").click()  # a PUT: it needs the session's CSRF token
    expect(dash).to_contain_text("on for 25% of users (+2 allowlisted) - changed")
    flag = server.client(server.add_user("ops", "pro", admin=True)).get("/api/admin/flags/model_switching").json()
    assert (flag["state"], flag["percent"], flag["allow"], flag["updated_by"]) == ("percentage", 25, ["sam", "ann"], "root")
    dash.get_by_role("button", name="Verify the hash chain").click()
    expect(dash).to_contain_text("chain intact:")


def _rgb(hex_colour: str) -> str:
    return ",".join(str(int(hex_colour[i:i + 2], 16)) for i in (1, 3, 5))


def _variable(page: Page, name: str) -> str:
    return page.evaluate(f"getComputedStyle(document.documentElement).getPropertyValue('--{name}').trim()")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=IDS)
def test_the_admin_page_follows_the_theme_charts_included(server, new_page, name, scheme, viewport):
    add_user(server, "root", "pro", admin=True)
    page = new_page()
    log_in(page, server, "root")
    use_look(page, scheme, viewport)  # the system's scheme: the chat page has no choice stored yet
    page.goto(server.url + "/admin.html")
    expect(page.locator("html")).to_have_attribute("data-theme", scheme)
    canvas = page.locator("section#dashboard canvas").first
    expect(canvas).to_be_visible()
    grid = {theme: None for theme in ("light", "dark")}

    def drawn_in(theme: str) -> None:
        expect(page.locator("html")).to_have_attribute("data-theme", theme)
        grid[theme] = _rgb(_variable(page, "border"))
        wait_until(lambda: grid[theme] in canvas.evaluate(CANVAS_COLOURS), f"the charts' grid drawn in the {theme} theme")

    drawn_in(scheme)
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), "the page scrolls sideways"
    if not is_phone(viewport):
        top = page.locator("header.topbar").bounding_box()
        assert top is not None and top["height"] < 60, top  # one line
    shot(page, f"27-admin-theme-{name}")
    other = "light" if scheme == "dark" else "dark"
    page.get_by_role("button", name="Dark theme").click()  # the same switch as on the chat page, remembered
    drawn_in(other)
    assert grid[scheme] not in canvas.evaluate(CANVAS_COLOURS)  # drawn again, not drawn over
    page.goto(server.url + "/")
    expect(page.locator("html")).to_have_attribute("data-theme", other)
