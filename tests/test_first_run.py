"""The first run (issue 13 item 0): the built-in catalog answers real chat with no Ollama,
the README's first steps work as written (with the built-in catalog and the example one),
and an install without the `local` extra still starts, saying what is missing.

These run SmolLM2 for real (the `local` extra's model), so the replies are short prompts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import free_port
from tests.sse import collect, text_of
from tests.test_serve_startup import run_briefly

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "local-tiers.toml"


def chat(client, text: str) -> list[tuple[str, dict]]:
    conversation = client.post("/api/conversations", json={}).json()["id"]
    return collect(client, "POST", f"/api/conversations/{conversation}/messages", json={"content": text})


def test_with_no_ollama_the_built_in_catalog_answers_from_the_local_tier(start_server):
    server = start_server(tiers=None, ollama_host=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    alice = server.client(server.add_user("alice", "pro"))
    replies = chat(alice, "Say hello in three words.")
    start, done = replies[0], replies[-1]
    assert start[0] == "start" and done[0] == "done", replies
    assert (start[1]["tier"], start[1]["fallback_from"], start[1]["model"]) == ("local", "standard", "smollm2")
    assert start[1]["fallback_reason"]  # why Standard did not answer (its backend cannot be reached)
    assert text_of(replies).strip() and done[1]["tokens"] > 0
    assert server.client().get("/readyz").status_code == 200  # it can answer: it is ready
    status = {t["tier"]: t["status"] for t in server.client().get("/api/catalog/status").json()["tiers"]}
    assert status == {"standard": "unreachable", "pro": "unreachable", "code": "unreachable", "local": "ready"}


def first_steps() -> list[str]:
    block = re.search(r"First steps after `./bin/serve`:\n\n```sh\n(.*?)```", README.read_text(), re.S)
    assert block, "the README lost its first steps"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.parametrize("catalog", [None, EXAMPLE], ids=["built-in", "example"])
def test_the_readme_first_steps_work_as_written(start_server, db_url, tmp_path, catalog):
    server = start_server(tiers=catalog, ollama_host=f"http://127.0.0.1:{free_port()}")
    env = {**os.environ, "KYNSEY_DATABASE_URL": db_url, "KYNSEY_DATA_DIR": str(tmp_path), "KYNSEY_URL": server.url}
    if catalog:
        env["KYNSEY_TIERS"] = str(catalog)
    outputs = []
    for command in first_steps():
        command = command.replace(".venv/bin/kynsey", f"{sys.executable} -m kynsey.cli")
        done = subprocess.run(
            ["bash", "-c", command],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    token = next(out.strip() for out in outputs if out.startswith("ky_"))
    tiers = outputs[-1]
    assert (
        tiers.startswith(f"catalog {catalog or '<built-in default_tiers.toml>'}")
        and f"served by the Kynsey at {server.url}" in tiers
    )
    bob = server.client()
    assert bob.post("/api/auth/login", json={"name": "bob", "password": "a long password"}).status_code == 200
    assert bob.get("/api/admin/users").status_code == 200  # bob is the admin
    replies = chat(server.client(token), "Name one colour.")
    assert replies[-1][0] == "done" and text_of(replies).strip(), replies


def test_without_the_local_extra_the_local_tier_is_shown_unavailable_and_the_service_starts(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "llama_cpp.py").write_text(
        "raise ImportError(\"No module named 'llama_cpp' (simulated: the local extra is not installed)\")\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(blocked), str(ROOT)]),
        "KYNSEY_DATA_DIR": str(tmp_path / "data"),
        "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        "KYNSEY_LOG_FORMAT": "text",
    }
    env.pop("KYNSEY_TIERS", None)
    done = subprocess.run(
        [sys.executable, "-m", "kynsey.cli", "tiers", "--local"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    local = next(line for line in done.stdout.splitlines() if line.startswith("local "))
    assert "unreachable" in local and "pip install 'kynsey[local]'" in local, done.stdout
    assert "Application startup complete." in run_briefly(env)
