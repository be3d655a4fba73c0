"""`kynsey serve` as an operator runs it: start-up failures are `error: ...` with exit 1 or 2
(never a log line and exit 3), and logs are readable on a terminal, JSON otherwise
(issue 13 items 5 and 6)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from kynsey.logs import pick_format
from tests.conftest import OLLAMA_TIERS
from tests.live import free_port


def env_for(tmp_path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "KYNSEY_DATA_DIR": str(tmp_path),
        "KYNSEY_TIERS": str(OLLAMA_TIERS),
        "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        **extra,
    }


def serve_fails(env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "kynsey.cli", "serve", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done


def test_a_port_in_use_is_an_error_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve_fails(env_for(tmp_path), "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (the port is in use"
    )


@pytest.mark.parametrize(
    "setting, value, code, words",
    [
        ("KYNSEY_DATABASE_URL", "nosuchdb://somewhere/kynsey", 2, "error: bad KYNSEY_DATABASE_URL"),
        (
            "KYNSEY_DATABASE_URL",
            "postgresql+asyncpg://kynsey:secret@127.0.0.1:{port}/kynsey",
            1,
            "error: the database does not answer",
        ),
        ("KYNSEY_REDIS_URL", "notredis://127.0.0.1:{port}/0", 2, "error: bad KYNSEY_REDIS_URL"),
        ("KYNSEY_TIERS", "{tmp}/missing.toml", 2, "error: {tmp}/missing.toml: cannot read the file"),
        ("KYNSEY_SWITCH_RATE_LIMIT", "lots", 2, "error: bad setting switch_rate_limit"),
    ],
)
def test_start_up_failures_are_one_clear_line(tmp_path, setting, value, code, words):
    value, words = value.format(port=free_port(), tmp=tmp_path), words.format(tmp=tmp_path)
    done = serve_fails(env_for(tmp_path, **{setting: value}), "--port", str(free_port()))
    assert done.returncode == code and done.stderr.startswith(words), done.stderr
    assert "secret" not in done.stderr  # a database password is never echoed


def test_a_catalog_that_lacks_a_plan_users_are_on_does_not_start(db_url, tmp_path):
    env = env_for(tmp_path, KYNSEY_DATABASE_URL=db_url)
    made = subprocess.run(
        [sys.executable, "-m", "kynsey.cli", "user", "add", "alice", "--plan", "pro", "--no-password"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    gold = tmp_path / "gold.toml"
    gold.write_text(OLLAMA_TIERS.read_text().replace("[plans.pro]", "[plans.gold]"))
    done = serve_fails({**env, "KYNSEY_TIERS": str(gold)}, "--port", str(free_port()))
    assert done.returncode == 2 and "plan 'pro' has 1 user(s): alice" in done.stderr


def run_briefly(env: dict) -> str:
    """Start `kynsey serve`, wait until it answers, stop it with SIGTERM; its standard error."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kynsey.cli", "serve", "--port", str(port)],
        env=env,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        for _ in range(400):
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("kynsey serve never answered")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM), err  # uvicorn re-raises the signal once it has shut down
    assert "Application shutdown complete." in err
    return err


def test_logs_are_json_off_a_terminal_and_text_when_asked(tmp_path):
    lines = [line for line in run_briefly(env_for(tmp_path)).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any(e["msg"] == "Application startup complete." for e in entries)
    assert any(e["msg"].startswith("Kynsey serves http://127.0.0.1:") for e in entries)
    text = run_briefly(env_for(tmp_path, KYNSEY_LOG_FORMAT="text")).splitlines()
    started = next(line for line in text if "Application startup complete." in line)
    assert " INFO    uvicorn.error  Application startup complete." in started and not started.startswith("{")


def test_a_redis_that_does_not_answer_only_warns_at_start(tmp_path):
    """Rate limits fail open to memory while Redis is down: a restart during its outage still serves."""
    err = run_briefly(env_for(tmp_path, KYNSEY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    assert err.startswith("warning: Redis does not answer at KYNSEY_REDIS_URL"), err[:300]


def test_auto_picks_text_only_for_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert pick_format("auto", Terminal()) == "text"
    assert pick_format("auto", io.StringIO()) == "json"
    assert pick_format("json", Terminal()) == "json" and pick_format("text", io.StringIO()) == "text"
