"""/docs in a real browser: Swagger UI served from this host under the page's CSP, and usable with a token."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect

from tests.browser.pages import add_user, shot


def test_the_api_docs_render_under_the_csp_and_try_a_call_with_a_token(server, new_page):
    token = add_user(server, "ann", "pro")
    page = new_page()  # fails the test on any script error or anything the CSP blocked
    page.goto(server.url + "/docs")
    tiers = page.locator(".opblock", has_text="/api/models/tiers").first
    expect(tiers).to_be_visible()  # the UI ran and read /openapi.json
    expect(page.locator(".opblock", has_text="/api/conversations/{conversation_id}/messages").first).to_be_visible()

    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".dialog-ux")
    dialog.get_by_label("auth-bearer-value").fill(token)
    dialog.get_by_role("button", name="Apply credentials").click()
    expect(dialog.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.locator("button.btn-done").click()
    expect(dialog).to_be_hidden()

    tiers.locator(".opblock-summary").first.click()
    tiers.get_by_role("button", name="Try it out").click()
    tiers.get_by_role("button", name="Execute").click()
    live = tiers.locator(".live-responses-table")
    expect(live.locator("tr.response .response-col_status")).to_have_text("200")
    expect(live).to_contain_text('"tiers"')
    shot(page, "28-api-docs")


def test_the_api_docs_files_come_from_this_host(server):
    with httpx.Client(base_url=server.url) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
        assert client.head("/docs").status_code == 200  # as the static pages answer a HEAD
        assert "cdn" not in page.text.lower() and "<script>" not in page.text  # no CDN, no inline script
        assert client.get("/docs/ui/swagger-ui-bundle.js").status_code == 200
        for other in ("index.html", "swagger-initializer.js", ""):  # the package's Petstore page
            missing = client.get(f"/docs/ui/{other}")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found", other
        assert client.get("/redoc").status_code == 404  # FastAPI's, from a CDN: not served
        doc = client.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"]["token"] == {
            "type": "http", "scheme": "bearer", "description": "an API token (`kynsey user token NAME`)"}
