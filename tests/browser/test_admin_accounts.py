"""The admin page runs the whole account lifecycle and answers upgrade requests, in a real
browser (SPEC F19, F21; issue 13 item 3, issue 10 item 8). Screenshots: test-output/screenshots/."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import IDS, LOOKS, PASSWORD, add_user, log_in, shot, use_look


def open_admin(page: Page, server, name: str = "root") -> None:
    log_in(page, server, name)
    page.goto(server.url + "/admin.html")
    expect(page.locator("#usersTable tbody tr").first).to_be_visible()


def row(page: Page, name: str):
    return page.locator(f'#usersTable tr[data-user="{name}"]')


def notice(page: Page):
    return page.locator("#usersNotice")


def test_an_admin_runs_an_account_from_creation_to_removal(server, new_page):
    add_user(server, "root", "pro", admin=True)
    sam_token = add_user(server, "sam", "standard")
    page = new_page()
    open_admin(page, server)

    form = page.get_by_role("form", name="Add a user")
    form.get_by_label("Name").fill("ann")
    form.get_by_label("Plan").select_option("standard")
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Add user").click()
    expect(notice(page)).to_have_text("Added ann on the standard plan.")
    expect(row(page, "ann")).to_contain_text("active")
    shot(page, "20-admin-users")

    page.get_by_role("button", name="Reset the password of sam").click()
    dialog = page.get_by_role("dialog", name="New password for sam")
    expect(dialog).to_be_visible()
    dialog.get_by_label("New password").fill("short")
    dialog.get_by_role("button", name="Set password").click()
    expect(dialog).to_be_visible()  # the browser holds a too-short password back
    dialog.get_by_label("New password").fill("a fresh password")
    dialog.get_by_label("New password").press("Enter")
    expect(notice(page)).to_have_text("sam's password is set; their browser sessions ended.")
    expect(dialog).to_be_hidden()
    assert (
        server.client().post("/api/auth/login", json={"name": "sam", "password": "a fresh password"}).status_code == 200
    )

    page.get_by_role("button", name="Disable ann").click()
    expect(row(page, "ann")).to_contain_text("disabled")
    expect(page.get_by_role("button", name="Enable ann")).to_be_focused()
    assert server.client().post("/api/auth/login", json={"name": "ann", "password": PASSWORD}).status_code == 401
    page.get_by_role("button", name="Enable ann").click()
    expect(row(page, "ann")).to_contain_text("active")

    page.get_by_role("button", name="Make admin ann").click()
    expect(row(page, "ann").locator("td").first).to_have_text("admin")
    page.get_by_role("button", name="Remove admin from ann").click()
    expect(row(page, "ann").locator("td").first).to_have_text("user")
    page.get_by_role("button", name="Remove admin from root").click()
    expect(notice(page)).to_contain_text("'root' is the last enabled admin")

    page.get_by_role("button", name="API tokens of sam").click()
    tokens = page.get_by_role("dialog", name="API tokens of sam")
    expect(tokens.locator("tbody tr")).to_have_count(1)
    shot(page, "21-admin-tokens")
    tokens.get_by_role("button", name="Revoke token").click()
    expect(tokens).to_contain_text("sam has no API tokens.")
    tokens.get_by_role("button", name="Close").click()
    expect(row(page, "sam")).to_contain_text("Tokens (0)")
    assert server.client(sam_token).get("/api/auth/me").status_code == 401

    other = new_page()
    log_in(other, server, "ann")
    page.get_by_role("button", name="Log out everywhere ann").click()
    page.get_by_role("dialog").get_by_role("button", name="Log out everywhere").click()
    expect(notice(page)).to_have_text("ann: 1 browser session(s) ended, 0 API token(s) revoked.")
    other.reload()
    expect(other.get_by_role("button", name="Log in")).to_be_visible()

    page.get_by_role("button", name="Delete ann").click()
    confirm = page.get_by_role("dialog", name="Delete ann?")
    expect(confirm).to_contain_text("This cannot be undone.")
    shot(page, "22-admin-delete")
    confirm.get_by_role("button", name="Delete ann").click()
    expect(notice(page)).to_have_text("Deleted ann with 0 conversation(s) and 0 API token(s).")
    expect(row(page, "ann")).to_have_count(0)
    actions = page.locator("#auditTable tbody tr td:nth-child(3)")
    expect(actions.first).to_have_text("user_delete")


def test_an_admin_approves_an_upgrade_request_and_sees_a_refused_catalog_reload(
    start_server, fake_ollama, new_page, tmp_path
):
    from tests.conftest import OLLAMA_TIERS

    catalog = tmp_path / "tiers.toml"
    catalog.write_text(OLLAMA_TIERS.read_text())
    server = start_server(ollama_host=fake_ollama.url, tiers=catalog)
    add_user(server, "root", "standard", admin=True)
    sam = server.client(add_user(server, "sam", "standard"))
    assert sam.post("/api/upgrade-requests", json={"plan": "pro", "note": "for the Code tier"}).status_code == 201
    page = new_page()
    open_admin(page, server)
    request = page.locator("#upgradesTable tbody tr")
    expect(request).to_have_count(1)
    expect(request).to_contain_text("for the Code tier")
    shot(page, "23-admin-upgrade-request")
    page.get_by_role("button", name="Approve sam's request for pro").click()
    expect(page.locator("#upgradesNotice")).to_have_text("sam is now on the pro plan.")
    expect(page.locator("#upgradesEmpty")).to_be_visible()
    expect(page.get_by_label("Plan for sam", exact=True)).to_have_value("pro")
    assert sam.get("/api/upgrade-requests").json()["requests"][0]["status"] == "approved"

    expect(page.locator("#catalogPlans")).to_contain_text("Pro (pro): standard, pro, code; 1 user(s)")
    catalog.write_text(OLLAMA_TIERS.read_text().replace("[plans.pro]", "[plans.gold]"))
    page.get_by_role("button", name="Reload the catalog file").click()
    expect(page.locator("#catalogNotice")).to_contain_text("plan 'pro' has 1 user(s): sam")
    shot(page, "24-admin-catalog-refused")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=IDS)
def test_a_user_changes_their_own_password_from_the_account_menu(server, new_page, name, scheme, viewport):
    add_user(server, "sam", "standard")
    page = new_page()
    log_in(page, server, "sam")
    use_look(page, scheme, viewport)
    bar = page.locator(".topbar").bounding_box()
    assert bar is not None and bar["height"] < 60, bar  # the account menu fits on one line, on a phone too
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    page.get_by_role("button", name="Password").click()
    dialog = page.get_by_role("dialog", name="Change your password")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Current password")).to_be_focused()

    dialog.get_by_label("Current password").fill("not my password")
    dialog.get_by_label("New password").fill("a fresh password")
    dialog.get_by_role("button", name="Change password").click()
    expect(dialog.get_by_role("alert")).to_contain_text("current password is not right")
    expect(dialog.get_by_label("Current password")).to_be_focused()

    dialog.get_by_label("Current password").fill(PASSWORD)
    dialog.get_by_label("New password").fill("a fresh password")
    dialog.get_by_label("New password").press("Enter")
    expect(dialog.locator("#passwordDone")).to_have_text("Password changed; 0 other browser sessions logged out.")
    expect(dialog.get_by_role("button", name="Close")).to_be_focused()
    shot(page, f"26-own-password-{name}")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()  # still logged in here
    assert server.client().post("/api/auth/login", json={"name": "sam", "password": PASSWORD}).status_code == 401
    assert server.client().post("/api/auth/login", json={"name": "sam", "password": "a fresh password"}).status_code == 200
