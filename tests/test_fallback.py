"""Fallback along the tier's chain, and circuit breaking (SPEC F6)."""

from __future__ import annotations

import pytest

from tests.servers.fake_ollama import FakeOllama
from tests.servers.fake_openai import FakeOpenAI
from tests.sse import collect, text_of
from tests.test_chat import new_conversation, send

STANDARD, PRO, CODE = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct", "qwen2.5-coder:7b-instruct"


@pytest.mark.parametrize("mode", ["missing", "busy", "load_fail", "error_500"])
def test_a_failure_before_the_first_token_falls_back_and_says_so(server, fake_ollama, mode):
    client = server.client(server.add_user("alice", "pro"))
    assert client.post("/api/models/tier", json={"tier": "code"}).status_code == 200
    fake_ollama.fail[CODE] = mode
    cid = new_conversation(client)
    evts = send(client, cid, "hello")
    start = evts[0][1]
    # code falls back to pro first (its chain is pro, standard)
    assert (start["tier"], start["fallback_from"]) == ("pro", "code") and start["fallback_reason"]
    assert evts[-1][0] == "done" and text_of(evts) == "Echo: hello"
    stored = client.get(f"/api/conversations/{cid}").json()["messages"][-1]
    assert (stored["tier"], stored["model"], stored["fallback_from"]) == ("pro", PRO, "code")
    assert stored["fallback_reason"] == start["fallback_reason"] and stored["status"] == "complete"


def test_fallback_only_goes_to_tiers_the_user_may_use(server, fake_ollama, tmp_path):
    client = server.client(server.add_user("sam", "standard"))
    fake_ollama.fail[STANDARD] = "busy"
    cid = new_conversation(client)
    evts = send(client, cid, "hello")
    assert [n for n, _ in evts] == ["error"] and evts[0][1]["code"] == "backend_busy"
    stored = client.get(f"/api/conversations/{cid}").json()["messages"]
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "failed")]
    assert stored[1]["error"]


def test_repeated_failures_open_the_circuit_and_the_tier_shows_degraded(start_server, fake_ollama):
    # No background refresh: a probe that finds the backend up half-opens an open circuit at once.
    server = start_server(ollama_host=fake_ollama.url, circuit_failures=2, circuit_cooldown=30, status_refresh=3600)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    client.post("/api/models/tier", json={"tier": "pro"})
    fake_ollama.fail[PRO] = "error_500"
    cid = new_conversation(client)
    for _ in range(2):
        assert send(client, cid, "x")[0][1]["fallback_from"] == "pro"
    tiers = {t["tier"]: t for t in client.get("/api/models/tiers").json()["tiers"]}
    assert tiers["pro"]["status"] == "degraded"
    asked = len([1 for path, b in fake_ollama.requests if path == "/api/chat" and b["model"] == PRO])
    evts = send(client, cid, "while open")
    assert evts[0][1]["fallback_from"] == "pro" and "paused" in evts[0][1]["fallback_reason"]
    assert len([1 for path, b in fake_ollama.requests if path == "/api/chat" and b["model"] == PRO]) == asked
    assert client.post("/api/models/tier", json={"tier": "code"}).status_code == 200
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 503
    metrics = client.get("/metrics").text
    assert 'kynsey_fallbacks_total{from_tier="pro",reason="backend_error",to_tier="standard"}' in metrics
    assert 'kynsey_circuit_state{backend="ollama",model="qwen2.5:14b-instruct"} 2.0' in metrics


def test_after_the_cooldown_one_probe_closes_the_circuit(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, circuit_failures=1, circuit_cooldown=0.3)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    client.post("/api/models/tier", json={"tier": "pro"})
    fake_ollama.fail[PRO] = "busy"
    cid = new_conversation(client)
    assert send(client, cid, "fails")[0][1]["fallback_from"] == "pro"
    del fake_ollama.fail[PRO]

    async def after_cooldown(rt):
        import asyncio

        while rt.circuits.state("ollama", PRO) == "open":
            await asyncio.sleep(0.05)

    server.call(after_cooldown)
    evts = send(client, cid, "probe")
    assert evts[0][1]["tier"] == "pro" and "fallback_from" not in evts[0][1]
    assert server.call(_state) == "closed"


async def _state(rt):
    return rt.circuits.state("ollama", PRO)


CATALOG = """
default_tier = "standard"
[backends.primary]
kind = "ollama"
hosts = ["{primary}"]
[backends.spare]
kind = "openai"
hosts = ["{spare}"]
[plans.standard]
grants = ["standard", "backup"]
[[tiers]]
tier = "standard"
display_name = "Standard"
internal_name = "KYNSEY Mini"
model_id = "llama3.2:3b-instruct-fp16"
backend = "primary"
fallback = ["backup"]
requires = "standard"
[[tiers]]
tier = "backup"
display_name = "Backup"
internal_name = "KYNSEY Spare"
model_id = "spare-model"
backend = "spare"
requires = "backup"
"""


def test_an_unreachable_backend_falls_back_to_an_openai_compatible_one(start_server, tmp_path):
    with FakeOllama(models={STANDARD: 1}, loaded=[STANDARD]) as primary, FakeOpenAI(models=["spare-model"]) as spare:
        path = tmp_path / "tiers.toml"
        path.write_text(CATALOG.format(primary=primary.url, spare=spare.url))
        server = start_server(tiers=path)
        server.refresh_status()
        client = server.client(server.add_user("sam", "standard"))
        cid = new_conversation(client)
        assert send(client, cid, "via ollama")[0][1]["tier"] == "standard"
        primary.stop()
        evts = collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "primary is down"})
        start = evts[0][1]
        assert (start["tier"], start["model"], start["fallback_from"]) == ("backup", "spare-model", "standard")
        assert "reach" in start["fallback_reason"] and evts[-1][0] == "done" and text_of(evts)
        sent = [b for path, b in spare.requests if path == "/v1/chat/completions"][-1]
        assert [m["content"] for m in sent["messages"]] == ["via ollama", "Echo: via ollama", "primary is down"]
