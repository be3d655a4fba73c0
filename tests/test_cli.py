"""The `kynsey` command: users, tokens, plans, tiers; bad arguments get clear errors (SPEC F15)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kynsey.cli import app
from tests.conftest import OLLAMA_TIERS
from tests.test_crash_recovery import free_port


@pytest.fixture
def kynsey(db_url, tmp_path, monkeypatch, fake_ollama):
    monkeypatch.setenv("KYNSEY_DATABASE_URL", db_url)
    monkeypatch.setenv("KYNSEY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url)
    monkeypatch.setenv("KYNSEY_TIERS", str(OLLAMA_TIERS))
    monkeypatch.setenv("KYNSEY_URL", f"http://127.0.0.1:{free_port()}")  # no server there: `tiers` probes from here
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input)

    return run


def test_users_tokens_and_plans(kynsey):
    made = kynsey("user", "add", "alice", "--plan", "pro")
    assert made.exit_code == 0 and "created user alice (plan pro, no password: API tokens only)" in made.output
    with_password = kynsey("user", "add", "bob", "--plan", "standard", "--admin", input="a long password\n")
    assert with_password.exit_code == 0 and "admin, with password" in with_password.output
    token = kynsey("user", "token", "alice")
    assert token.exit_code == 0 and token.output.strip().startswith("ky_")
    assert kynsey("user", "plan", "alice", "standard").output.strip() == "alice: plan pro -> standard"
    listed = kynsey("user", "list").output
    assert "alice" in listed and "bob" in listed and "admin" in listed


@pytest.mark.parametrize(
    "args, words",
    [
        (("user", "add", "carol", "--plan", "gold"), "unknown plan 'gold'"),
        (("user", "add", "bad name!", "--plan", "pro"), "a user name is"),
        (("user", "token", "nobody"), "no user named 'nobody'"),
        (("user", "plan", "nobody", "pro"), "no user named 'nobody'"),
    ],
)
def test_bad_arguments_are_clear_errors(kynsey, args, words):
    result = kynsey(*args)
    assert result.exit_code == 1 and words in result.output


def test_a_duplicate_user_or_a_short_password_changes_nothing(kynsey):
    assert kynsey("user", "add", "alice", "--plan", "pro").exit_code == 0
    again = kynsey("user", "add", "alice", "--plan", "standard")
    assert again.exit_code == 1 and "already exists" in again.output
    short = kynsey("user", "add", "dave", "--plan", "pro", input="short\n")
    assert short.exit_code == 1 and "at least 8" in short.output
    listed = kynsey("user", "list").output
    assert "dave" not in listed and "pro" in listed.split("alice")[1].split("\n")[0]


def test_tiers_prints_live_status(kynsey, fake_ollama):
    out = kynsey("tiers").output
    assert f"backend ollama (ollama) {fake_ollama.url}: up, version" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in ("standard", "pro", "code")}
    assert "ready" in lines["standard"] and "cold" in lines["pro"] and "KYNSEY" not in lines["pro"]
    fake_ollama.stop()
    assert "unreachable" in kynsey("tiers").output


def test_a_bad_catalog_or_setting_stops_with_its_name(kynsey, tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text('default_tier = "x"\n')
    result = kynsey("tiers", "--tiers", str(bad))
    assert result.exit_code == 2 and str(bad) in result.output
    monkeypatch.setenv("KYNSEY_SWITCH_RATE_LIMIT", "lots")
    result = kynsey("user", "list")
    assert result.exit_code == 2 and "switch_rate_limit" in result.output


def test_check_catalog(kynsey, tmp_path):
    good = kynsey("check-catalog", "examples/local-tiers.toml")
    assert good.exit_code == 0 and "valid: tiers standard, fast" in good.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[[tiers]]\ntier = 1\n")
    result = kynsey("check-catalog", str(bad))
    assert result.exit_code == 2 and str(bad) in result.output
