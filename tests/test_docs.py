"""The README documents every setting exactly as `kynsey settings --markdown` prints it."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from kynsey.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_matches_the_settings_object():
    printed = CliRunner().invoke(app, ["settings", "--markdown"]).output.strip()
    block = re.search(r"<!-- settings:start.*?-->\n(.*?)\n<!-- settings:end -->", README.read_text(), re.S)
    assert block, "README lost its settings table markers"
    assert block.group(1).strip() == printed, "README settings table is stale: paste `kynsey settings --markdown`"
