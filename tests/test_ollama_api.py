"""The Ollama-compatible API driven by the official `ollama` client against a live Kynsey (SPEC F16)."""

from __future__ import annotations

import httpx
import ollama
import pytest

from kynsey.compat.shapes import OLLAMA_PATHS

STANDARD, PRO, CODE = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct", "qwen2.5-coder:7b-instruct"
HELLO = [{"role": "user", "content": "hello"}]


def client(server, token: str, base: str = "/ollama") -> ollama.Client:
    """The client as a user configures it: Kynsey's URL (with or without the mount) and a token header."""
    return ollama.Client(host=server.url + base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.mark.parametrize("base", ["/ollama", ""])
def test_tags_show_ps_and_version_describe_the_callers_tiers(server, base):
    pro = client(server, server.add_user("alice", "pro"), base)
    assert [m.model for m in pro.list().models] == ["standard:latest", "pro:latest", "code:latest"]
    first = pro.list().models[0]
    assert first.size == 6_433_687_776 and first.details.parameter_size == "3B" and first.digest
    assert [m.model for m in pro.ps().models] == ["standard:latest"]  # loaded on the backend
    shown = pro.show("pro")
    assert shown.modelinfo["kynsey.model"] == PRO and "num_ctx 8192" in shown.parameters
    assert httpx.get(f"{server.url}{base}/api/version").json() == {"version": "0.12.6"}

    std = client(server, server.add_user("sam", "standard"), base)
    assert [m.model for m in std.list().models] == ["standard:latest"]
    with pytest.raises(ollama.ResponseError) as locked:
        std.show("pro")
    assert locked.value.status_code == 403 and "upgrade" in locked.value.error


def test_chat_streams_and_answers_whole_with_ollamas_figures(server, fake_ollama):
    c = client(server, server.add_user("alice", "pro"))
    parts = list(c.chat(model="code", messages=HELLO, stream=True, options={"temperature": 0.1, "num_ctx": 99}))
    assert "".join(p.message.content for p in parts) == "Echo: hello" and parts[-1].done
    last = parts[-1]
    assert last.done_reason == "stop" and last.eval_count > 0 and last.prompt_eval_count > 0
    assert isinstance(last.total_duration, int) and last.total_duration >= last.eval_duration > 0
    assert all(p.model == "code:latest" for p in parts)
    sent = [b for path, b in fake_ollama.requests if path == "/api/chat"][-1]
    assert sent["options"] == {"temperature": 0.1, "num_ctx": 8192}  # num_ctx stays the tier's
    whole = c.chat(model="standard:latest", messages=HELLO)
    assert whole.message.content == "Echo: hello" and whole.done and whole.model == "standard:latest"


def test_generate_streams_and_answers_whole(server, fake_ollama):
    c = client(server, server.add_user("alice", "pro"), "")
    parts = list(c.generate(model="pro", prompt="hi there", system="Be brief.", stream=True))
    assert "".join(p.response for p in parts) == "Echo: hi there" and parts[-1].done
    sent = [b for path, b in fake_ollama.requests if path == "/api/chat"][-1]
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    whole = c.generate(model="pro", prompt="again")
    assert whole.response == "Echo: again" and whole.eval_count > 0
    loaded = c.generate(model="pro", prompt="")  # Ollama's load request
    assert loaded.done and loaded.done_reason == "load" and loaded.response == ""
    for keep_alive in (0, "0", "0s", "0m"):  # Ollama's unload request: answered as one, and nothing unloaded
        unloaded = c.generate(model="pro", prompt="", keep_alive=keep_alive)
        assert unloaded.done and unloaded.done_reason == "unload" and unloaded.response == "", keep_alive
        assert c.chat(model="pro", messages=[], keep_alive=keep_alive).done_reason == "unload"
    assert c.generate(model="pro", prompt="", keep_alive="5m").done_reason == "load"
    assert "pro:latest" in [m.model for m in c.ps().models]  # still in memory


def test_locked_tier_rate_limit_and_fallback(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, chat_rate_limit="2/minute")
    server.refresh_status()
    std = client(server, server.add_user("sam", "standard"))
    with pytest.raises(ollama.ResponseError) as locked:
        std.chat(model="pro", messages=HELLO)
    assert locked.value.status_code == 403 and "Pro plan" in locked.value.error
    pro = client(server, server.add_user("alice", "pro"))
    fake_ollama.fail[CODE] = "busy"
    assert pro.chat(model="code", messages=HELLO).model == "pro:latest"  # the tier that answered
    pro.chat(model="code", messages=HELLO)
    with pytest.raises(ollama.ResponseError) as limited:
        pro.chat(model="code", messages=HELLO)
    assert limited.value.status_code == 429 and "too many chat requests" in limited.value.error


def test_a_mid_stream_failure_ends_with_an_error_line(server, fake_ollama):
    c = client(server, server.add_user("alice", "pro"))
    fake_ollama.fail[STANDARD] = "stream_error"
    seen = []
    with pytest.raises(ollama.ResponseError) as broken:
        for part in c.chat(model="standard", messages=HELLO, stream=True):
            seen.append(part.message.content)
    assert "".join(seen) and "cut off" in broken.value.error


def test_errors_are_in_ollamas_shape(server):
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.get("/api/tags").json() == {"error": "log in, or send 'Authorization: Bearer <token>'"}
    token = server.add_user("alice", "pro")
    auth = {"Authorization": f"Bearer {token}"}
    bad = http.post("/ollama/api/chat", json={"messages": HELLO}, headers=auth)
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    unknown = http.post("/ollama/api/chat", json={"model": "llama3", "messages": HELLO}, headers=auth)
    assert unknown.status_code == 404 and unknown.json() == {
        "error": "there is no tier 'llama3'; tiers: standard, pro, code"}
    assert http.get("/ollama/").text == "Ollama is running"
    assert http.post("/ollama/api/pull", json={"model": "x"}, headers=auth).json()["error"]


def test_the_root_endpoints_clash_with_none_of_kynseys_own(server):
    """Served at the root too (a drop-in base URL): no Kynsey route may ever take these paths."""
    spec = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    owners = {path: {op["tags"][0] for op in spec[path].values()} for path in OLLAMA_PATHS}
    assert owners == {path: {"ollama"} for path in OLLAMA_PATHS}


def test_fields_ollama_does_not_know_are_ignored_as_ollama_does(server):
    http = server.client(server.add_user("alice", "pro"))
    body = {"model": "pro", "messages": HELLO, "stream": False, "newer_field": 1, "keep_alive": "5m"}
    resp = http.post("/ollama/api/chat", json=body)
    assert resp.status_code == 200 and resp.json()["message"]["content"] == "Echo: hello"
    nul = http.post("/ollama/api/chat", json={**body, "messages": [{"role": "user", "content": "a\u0000b"}]})
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]


def test_the_client_takes_kynseys_url_and_token_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"{server.url}/ollama")
    monkeypatch.setenv("OLLAMA_API_KEY", server.add_user("alice", "pro"))
    assert ollama.Client().chat(model="pro", messages=HELLO).message.content == "Echo: hello"
