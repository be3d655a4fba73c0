"""The `kynsey` command: users, tokens, plans, tiers; bad arguments get clear errors (SPEC F15, F21)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kynsey.cli import app
from tests.conftest import OLLAMA_TIERS
from tests.live import free_port


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
    assert out.startswith(f"catalog {OLLAMA_TIERS}, default tier standard: no Kynsey answers at http://127.0.0.1:")
    assert "so this is probed from here" in out
    assert f"backend ollama (ollama) host 1 {fake_ollama.url}: up, version" in out
    assert "holds llama3.2:3b-instruct-fp16 (1); 0 streaming" in out
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


def test_the_account_lifecycle_from_the_command_line(kynsey):
    assert kynsey("user", "add", "root", "--plan", "pro", "--admin", "--no-password").exit_code == 0
    assert kynsey("user", "add", "ann", "--plan", "standard", input="first password\n").exit_code == 0
    token = kynsey("user", "token", "ann", "--name", "laptop", "--expires", "30").output.strip()
    assert token.startswith("ky_")
    listed = kynsey("token", "list", "ann").output.splitlines()
    assert listed[0].split() == ["ID", "NAME", "CREATED", "LAST", "USED", "EXPIRES"]
    token_id, name = listed[1].split()[:2]
    assert name == "laptop"
    assert kynsey("user", "passwd", "ann", input="second password\n").output.strip() == "ann: password set; 0 browser session(s) ended"
    assert kynsey("user", "passwd", "ann", input="short\n").exit_code == 1
    assert kynsey("user", "disable", "ann").exit_code == 0
    assert "disabled" in kynsey("user", "list").output.split("ann")[1].splitlines()[0]
    assert kynsey("user", "enable", "ann").output.strip() == "ann: enabled"
    assert kynsey("user", "admin", "ann", "on").output.strip() == "ann: admin"
    assert kynsey("user", "admin", "ann", "maybe").exit_code == 2
    assert kynsey("user", "admin", "ann", "off").output.strip() == "ann: not an admin"
    assert kynsey("user", "admin", "root", "off").exit_code == 1  # the last admin stays
    assert kynsey("user", "logout", "ann", "--tokens").output.strip() == "ann: 0 browser session(s) ended, 1 API token(s) revoked"
    assert kynsey("token", "list", "ann").output.strip() == "ann has no API tokens"
    kynsey("user", "token", "ann")
    new_id = kynsey("token", "list", "ann").output.splitlines()[1].split()[0]
    assert new_id != token_id
    assert kynsey("token", "revoke", new_id).output.strip() == f"revoked token {new_id} (unnamed) of ann"
    assert kynsey("token", "revoke", new_id).exit_code == 1
    refused = kynsey("user", "delete", "ann")  # not a terminal: needs --yes
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert kynsey("user", "delete", "ann", "--yes").output.strip() == "deleted ann: 0 conversation(s), 0 token(s), 0 session(s)"
    assert "ann" not in kynsey("user", "list").output
    export = kynsey("audit", "export", "--user", "ann").output
    actions = [line.split('"action": "')[1].split('"')[0] for line in export.splitlines()]
    assert actions == [
        "user_add", "token_issue", "user_passwd", "user_disable", "user_enable", "user_admin", "user_admin",
        "user_logout_all", "token_issue", "token_revoke", "user_delete",
    ]


def test_a_trailing_newline_is_not_a_new_user_name(kynsey):
    result = kynsey("user", "add", "mallory\n", "--plan", "standard", "--no-password")
    assert result.exit_code == 1 and "a user name is" in result.output


def wait_for_echo_off(fd: int) -> None:
    import termios
    import time

    for _ in range(1000):
        if not termios.tcgetattr(fd)[3] & termios.ECHO:
            return
        time.sleep(0.01)
    raise AssertionError("the terminal's echo was never turned off for the password")


def terminal(env: dict, *args: str, answers: list[tuple[str, str]]) -> str:
    """Run the CLI on a pseudo-terminal of its own, answering each prompt when it appears."""
    leader, follower = pty.openpty()

    def own_terminal() -> None:
        import fcntl
        import termios

        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "kynsey.cli", *args], stdin=follower, stdout=follower, stderr=follower,
        env=env, preexec_fn=own_terminal, close_fds=True,
    )
    os.close(follower)
    seen, pending = "", list(answers)
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        assert ready, f"the command went quiet; so far: {seen!r}"
        try:
            chunk = os.read(leader, 1024).decode(errors="replace")
        except OSError:  # the command ended and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        while pending and pending[0][0] in seen:
            prompt, answer = pending.pop(0)
            seen = seen.replace(prompt, f"<{prompt}>", 1)
            wait_for_echo_off(leader)  # typed earlier, getpass would flush it when it turns echo off
            os.write(leader, answer.encode() + b"\n")
    assert proc.wait(timeout=60) == 0, seen
    os.close(leader)
    return seen


def test_at_a_terminal_user_add_asks_for_the_password_twice_without_echo(kynsey, db_url, tmp_path):
    env = {**os.environ, "KYNSEY_DATABASE_URL": db_url, "KYNSEY_DATA_DIR": str(tmp_path), "KYNSEY_TIERS": str(OLLAMA_TIERS)}
    out = terminal(env, "user", "add", "carol", "--plan", "pro",
                   answers=[("Password for carol:", "a secret phrase"), ("Repeat for confirmation:", "a secret phrase")])
    assert "created user carol (plan pro, with password)" in out
    assert "a secret phrase" not in out  # hidden as typed
    terminal(env, "user", "passwd", "carol",
             answers=[("New password for carol:", "another phrase"), ("Repeat for confirmation:", "another phrase")])
    made = kynsey("user", "add", "dan", "--plan", "pro", "--no-password")  # piped or not, no question asked
    assert "no password: API tokens only" in made.output


def test_tiers_asks_the_running_server_and_says_so(kynsey, server, monkeypatch, tmp_path):
    monkeypatch.setenv("KYNSEY_URL", server.url)
    out = kynsey("tiers").output
    assert out.startswith(f"catalog {OLLAMA_TIERS}, default tier standard: as served by the Kynsey at {server.url}")
    assert "backend ollama (ollama) host 1: up, version" in out and "(host addresses and status reasons are shown to admins" in out
    assert server.runtime.settings.ollama_host not in out
    token = server.add_user("root", "pro", admin=True)
    detailed = kynsey("tiers", "--token", token).output
    assert f"backend ollama (ollama) host 1 {server.runtime.settings.ollama_host}: up, version" in detailed
    assert "plans: standard (standard; 0 user(s)); pro (standard, pro, code; 1 user(s))" in detailed
    refused = kynsey("tiers", "--token", "ky_not-a-token")
    assert refused.exit_code == 1 and "refused the API token" in refused.output
    other = tmp_path / "other.toml"
    other.write_text(OLLAMA_TIERS.read_text().replace('[plans.pro]\ndisplay_name = "Pro"', '[plans.gold]\ndisplay_name = "Gold"'))
    probed = kynsey("tiers", "--tiers", str(other)).output  # a file the server does not run: probed here, and checked
    assert probed.startswith(f"catalog {other}, default tier standard: probed from here, not asked of a running server (--tiers)")
    assert "WARNING: this catalog lacks plan 'pro', which 1 user(s) are on (root)" in probed


def test_a_database_that_does_not_answer_and_an_unwritable_file_are_told_apart(kynsey, monkeypatch, tmp_path):
    result = kynsey("audit", "export", "--output", str(tmp_path / "no" / "such" / "folder.csv"))
    assert result.exit_code == 1 and result.output.startswith("error: FileNotFoundError"), result.output
    monkeypatch.setenv("KYNSEY_DATABASE_URL", f"postgresql+asyncpg://kynsey:secret@127.0.0.1:{free_port()}/kynsey")
    result = kynsey("user", "list")
    assert result.exit_code == 1 and result.output.startswith("error: the database does not answer"), result.output
    assert "secret" not in result.output
