"""WCAG AA contrast of the page's palette, light and dark (issue 10, item 6).

Text needs 4.5:1 against what it sits on; the edges of controls, the focus ring
and status dots need 3:1 (WCAG 1.4.3 and 1.4.11). The colours are read from
style.css and the vendored highlight.js theme, so a palette change is checked.
``python -m tests.test_contrast`` prints every ratio.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parent.parent / "kynsey" / "web" / "static"
TEXT, GRAPHIC = 4.5, 3.0

# (foreground, background, minimum, where it shows)
PAIRS = [
    ("text", "bg", TEXT, "body text"),
    ("text", "panel", TEXT, "text on cards, the sidebar, replies"),
    ("text", "subtle", TEXT, "hovered conversation"),
    ("text", "selected-bg", TEXT, "current conversation, active tier"),
    ("text", "user-bg", TEXT, "your messages"),
    ("muted", "bg", TEXT, "hints, disabled tiers"),
    ("muted", "panel", TEXT, "figures, model names, labels"),
    ("muted", "subtle", TEXT, "badges"),
    ("muted", "user-bg", TEXT, "Copy on your messages"),
    ("muted", "selected-bg", TEXT, "a search snippet under the current conversation"),
    ("bg", "text", TEXT, "the Stop button"),
    ("link", "panel", TEXT, "links in replies"),
    ("link", "bg", TEXT, "links on the page"),
    ("accent-text", "accent", TEXT, "primary buttons"),
    ("error-text", "error-bg", TEXT, "errors"),
    ("error-text", "panel", TEXT, "unavailable tier note"),
    ("note-text", "note-bg", TEXT, "fallback note"),
    ("info-text", "info-bg", TEXT, "switch progress"),
    ("info-text", "selected-bg", TEXT, "tier tag, Active badge"),
    ("info-text", "panel", TEXT, "Switching… note"),
    ("locked-text", "locked-bg", TEXT, "Locked badge"),
    ("locked-text", "panel", TEXT, "upgrade note"),
    ("ok-text", "ok-bg", TEXT, "notices"),
    ("ready", "panel", TEXT, "Copied, results on the admin page"),
    ("code-text", "code-bg", TEXT, "code"),
    ("code-muted", "code-head", TEXT, "code language and Copy"),
    ("control-border", "panel", GRAPHIC, "edges of inputs and buttons"),
    ("control-border", "bg", GRAPHIC, "edges of buttons on the page"),
    ("focus", "bg", GRAPHIC, "focus ring"),
    ("focus", "panel", GRAPHIC, "focus ring on cards"),
    ("accent", "panel", GRAPHIC, "primary button edge"),
    ("accent", "bg", GRAPHIC, "primary button edge on the page"),
    ("ready", "panel", GRAPHIC, "status dot: ready"),
    ("cold", "panel", GRAPHIC, "status dot: cold"),
    ("warming", "panel", GRAPHIC, "status dot: warming"),
    ("missing", "panel", GRAPHIC, "status dot: missing"),
    ("unreachable", "panel", GRAPHIC, "status dot: unreachable"),
    ("degraded", "panel", GRAPHIC, "status dot: degraded"),
    *((f"chart-{n}", "panel", GRAPHIC, "a dashboard chart's series") for n in range(1, 9)),
    ("chart-error", "panel", GRAPHIC, "a dashboard chart's series: error"),
]
HEX = r"#[0-9a-fA-F]{6}"


def palettes() -> dict[str, dict[str, str]]:
    css = (STATIC / "style.css").read_text()
    blocks = {"light": r":root \{(.*?)\n\}", "dark": r':root\[data-theme="dark"\] \{(.*?)\n\}'}
    found = {}
    for theme, pattern in blocks.items():
        body = re.search(pattern, css, re.S).group(1)
        found[theme] = dict(re.findall(rf"--([\w-]+):\s*({HEX})", body))
    return found


def code_colours() -> list[tuple[str, str]]:
    """(colour, selector) of every highlight.js token colour, after style.css's overrides."""
    theme = next(STATIC.glob("vendor/highlight-github-dark-*.min.css")).read_text()
    overrides = dict((sel, col) for sel, col in re.findall(rf"\n(\.hljs-[\w-]+) \{{ color: ({HEX});", (STATIC / "style.css").read_text()))
    colours = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", theme):
        colour = re.search(rf"(?<!-)color:({HEX})", body)
        if colour and "background-color" not in body:
            selector = selectors.split("*/")[-1].strip()
            colours.append((overrides.get(selector, colour.group(1)), selector))
    return colours


def luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def ratio(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def rows() -> list[tuple[str, str, str, float, float, str]]:
    table = []
    for theme, colours in palettes().items():
        for fg, bg, minimum, where in PAIRS:
            table.append((theme, fg, bg, ratio(colours[fg], colours[bg]), minimum, where))
        for colour, selector in code_colours():
            table.append((theme, colour, "code-bg", ratio(colour, colours["code-bg"]), TEXT, f"code: {selector}"))
    return table


def test_both_palettes_define_the_same_colours():
    light, dark = palettes().values()
    assert set(light) == set(dark) and len(light) > 30


def test_the_highlight_theme_was_read():
    assert len(code_colours()) >= 10


@pytest.mark.parametrize("theme, fg, bg, value, minimum, where", rows(), ids=lambda v: v if isinstance(v, str) else None)
def test_contrast_meets_wcag_aa(theme, fg, bg, value, minimum, where):
    assert value >= minimum, f"{theme}: {fg} on {bg} ({where}) is {value:.2f}:1, needs {minimum}:1"


if __name__ == "__main__":
    for theme, fg, bg, value, minimum, where in rows():
        print(f"{theme:5} {fg:>15} on {bg:<12} {value:5.2f}:1 (needs {minimum}) {where}")
