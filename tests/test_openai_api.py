"""The OpenAI-compatible API driven by the official `openai` SDK against a live Kynsey (SPEC F16)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.servers.fake_ollama import FakeOllama
from tests.servers.fake_openai import FakeOpenAI
from tests.test_reply_faults import openai_server

STANDARD, PRO, CODE = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct", "qwen2.5-coder:7b-instruct"
HELLO = [{"role": "user", "content": "hello"}]


def sdk(server, token: str) -> openai.OpenAI:
    """The SDK as a user configures it, without its automatic retries (a 429 must surface)."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0, timeout=30)


def chats(fake: FakeOllama) -> list[dict]:
    return [body for path, body in fake.requests if path == "/api/chat"]


def test_models_are_the_tiers_the_plan_grants(server):
    pro = sdk(server, server.add_user("alice", "pro"))
    models = {m.id: m for m in pro.models.list()}
    assert list(models) == ["standard", "pro", "code"]
    assert models["pro"].model_extra["model_id"] == PRO and models["pro"].model_extra["display_name"] == "Pro"
    assert models["standard"].model_extra["status"] == "ready" and models["pro"].owned_by == "kynsey"
    assert pro.models.retrieve("code").id == "code"

    std = sdk(server, server.add_user("sam", "standard"))
    assert [m.id for m in std.models.list()] == ["standard"]
    with pytest.raises(openai.PermissionDeniedError) as locked:
        std.models.retrieve("pro")
    assert "upgrade" in locked.value.message and locked.value.body["code"] == "tier_locked"
    with pytest.raises(openai.NotFoundError) as unknown:
        std.models.retrieve("gpt-4o")
    assert unknown.value.body == {"message": "there is no tier 'gpt-4o'; tiers: standard, pro, code",
                                  "type": "not_found_error", "param": "model", "code": "unknown_tier", "tier": "gpt-4o"}


def test_a_completion_answers_with_usage_and_sends_the_history(server, fake_ollama):
    client = sdk(server, server.add_user("alice", "pro"))
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
               {"role": "assistant", "content": "Echo: first"}, {"role": "user", "content": "second question"}]
    done = client.chat.completions.create(model="pro", messages=history)
    assert done.choices[0].message.content == "Echo: second question" and done.choices[0].finish_reason == "stop"
    assert done.model == "pro" and done.object == "chat.completion"
    assert done.usage.completion_tokens > 0 and done.usage.prompt_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    assert done.model_extra["kynsey"]["model"] == PRO and "fallback_from" not in done.model_extra["kynsey"]
    sent = chats(fake_ollama)[-1]
    assert sent["model"] == PRO and [(m["role"], m["content"]) for m in sent["messages"]] == [
        (m["role"], m["content"]) for m in history]
    assert sent["options"] == {"temperature": 0.7, "num_ctx": 8192}  # the tier's own options
    assert client.chat.completions.with_raw_response.create(model="pro", messages=HELLO).headers["x-kynsey-tier"] == "pro"
    # Stateless: nothing was stored, and the active tier did not change.
    http = server.client(client.api_key)
    assert http.get("/api/conversations").json()["conversations"] == []
    assert http.get("/api/models/tiers").json()["active"] == "standard"


def test_a_stream_sends_chunks_then_usage_then_done(server):
    client = sdk(server, server.add_user("alice", "pro"))
    chunks = list(client.chat.completions.create(model="code", messages=HELLO, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model_extra["kynsey"]["tier"] == "code"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.object == "chat.completion.chunk" and c.model == "code" for c in chunks)
    plain = list(client.chat.completions.create(model="code", messages=HELLO, stream=True))
    assert all(c.choices and c.usage is None for c in plain)


def test_auto_or_no_model_is_the_callers_current_tier(server):
    token = server.add_user("alice", "pro")
    client, http = sdk(server, token), server.client(token)
    assert client.chat.completions.create(model="auto", messages=HELLO).model == "standard"
    assert http.post("/api/models/tier", json={"tier": "code"}).status_code == 200
    assert client.chat.completions.create(model="auto", messages=HELLO).model == "code"
    resp = http.post("/v1/chat/completions", json={"messages": HELLO})
    assert resp.status_code == 200 and resp.json()["model"] == "code"


def test_client_options_reach_the_backend_except_what_the_tier_pins(start_server, fake_ollama, tmp_path):
    from tests.conftest import OLLAMA_TIERS

    catalog = tmp_path / "tiers.toml"
    catalog.write_text(OLLAMA_TIERS.read_text().replace('requires = "pro"', 'requires = "pro"\npinned = ["temperature", "seed"]'))
    server = start_server(ollama_host=fake_ollama.url, tiers=catalog)
    client = sdk(server, server.add_user("alice", "pro"))
    asked = dict(temperature=0.1, top_p=0.5, max_tokens=1, stop=["x"], seed=7)
    done = client.chat.completions.create(model="standard", messages=HELLO, **asked)
    assert chats(fake_ollama)[-1]["options"] == {"temperature": 0.1, "num_ctx": 4096, "top_p": 0.5, "num_predict": 1,
                                                 "stop": ["x"], "seed": 7}
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 1
    client.chat.completions.create(model="pro", messages=HELLO, max_completion_tokens=50, extra_body={"top_k": 5},
                                   **asked)
    assert chats(fake_ollama)[-1]["options"] == {"temperature": 0.7, "num_ctx": 8192, "top_p": 0.5, "num_predict": 50,
                                                 "stop": ["x"], "top_k": 5}  # pinned: the tier's temperature, no seed


def test_a_locked_tier_is_a_permission_error_with_the_upgrade_prompt_and_is_audited(server):
    client = sdk(server, server.add_user("sam", "standard"))
    for stream in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as locked:
            client.chat.completions.create(model="pro", messages=HELLO, stream=stream)
        assert locked.value.status_code == 403 and "Pro plan" in locked.value.message
        assert locked.value.body["code"] == "tier_locked" and locked.value.body["param"] == "model"
    admin = server.client(server.add_user("root", "pro", admin=True))
    entries = admin.get("/api/admin/audit", params={"action": "api_chat"}).json()["entries"]
    assert [(e["actor"], e["result"], e["to_tier"]) for e in entries] == [("sam", "denied", "pro")] * 2
    assert entries[0]["details"] == {"api": "openai"}


def test_past_the_chat_limit_the_sdk_raises_its_rate_limit_error(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, chat_rate_limit="2/minute")
    client = sdk(server, server.add_user("alice", "pro"))
    first = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    assert first.headers["x-ratelimit-limit-requests"] == "2" and first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    client.chat.completions.create(model="standard", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="standard", messages=HELLO)
    assert int(limited.value.response.headers["retry-after"]) > 0
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert client.chat.completions.create(model="pro", messages=HELLO).model == "pro"  # per user and tier


def test_a_fallback_is_visible_in_the_answer(server, fake_ollama):
    client = sdk(server, server.add_user("alice", "pro"))
    fake_ollama.fail[CODE] = "busy"
    done = client.chat.completions.create(model="code", messages=HELLO)
    who = done.model_extra["kynsey"]
    assert done.model == "pro" and (who["tier"], who["model"], who["fallback_from"]) == ("pro", PRO, "code")
    assert "busy" in who["fallback_reason"] and done.choices[0].message.content == "Echo: hello"
    chunks = list(client.chat.completions.create(model="code", messages=HELLO, stream=True))
    assert chunks[0].model == "pro" and chunks[0].model_extra["kynsey"]["fallback_from"] == "code"
    metrics = server.client().get("/metrics").text
    assert 'kynsey_fallbacks_total{from_tier="code",reason="backend_busy",to_tier="pro"} 2.0' in metrics
    assert 'kynsey_compat_requests_total{api="openai",result="fallback"} 2.0' in metrics


def test_when_no_tier_answers_the_sdk_gets_a_server_error(server, fake_ollama):
    client = sdk(server, server.add_user("sam", "standard"))
    fake_ollama.fail[STANDARD] = "busy"
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="standard", messages=HELLO, stream=True)
    assert failed.value.status_code == 503 and failed.value.body["code"] == "backend_busy"


def test_a_mid_stream_failure_ends_the_stream_with_an_error(server, fake_ollama):
    client = sdk(server, server.add_user("alice", "pro"))
    fake_ollama.fail[STANDARD] = "stream_error"
    received = []
    with pytest.raises(openai.APIError) as broken:
        for chunk in client.chat.completions.create(model="standard", messages=HELLO, stream=True):
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) and "cut off" in broken.value.message and broken.value.body["code"] == "stream_broken"
    with pytest.raises(openai.APIStatusError) as whole:
        client.chat.completions.create(model="standard", messages=HELLO)
    assert whole.value.status_code == 502


def test_a_standard_user_can_neither_list_nor_use_pro_and_switching_off_means_the_default(server):
    std = sdk(server, server.add_user("sam", "standard"))
    assert "pro" not in [m.id for m in std.models.list()]
    with pytest.raises(openai.PermissionDeniedError):
        std.chat.completions.create(model="pro", messages=HELLO)
    admin = server.client(server.add_user("root", "pro", admin=True))
    assert admin.put("/api/admin/flags/model_switching", json={"state": "off"}).status_code == 200
    pro = sdk(server, server.add_user("alice", "pro"))
    assert [m.id for m in pro.models.list()] == ["standard"]
    with pytest.raises(openai.PermissionDeniedError) as off:
        pro.chat.completions.create(model="code", messages=HELLO)
    assert off.value.body["code"] == "feature_disabled"
    assert pro.chat.completions.create(model="auto", messages=HELLO).model == "standard"


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"n": 2}, "n"),
    ({"temperature": 3}, "temperature"),
    ({"max_tokens": 2**31}, "max_tokens"),
    ({"extra_body": {"top_k": 2**40}}, "top_k"),
    ({"seed": 2**63}, "seed"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "messages.0.content"),
])
def test_bad_requests_are_400_in_openais_shape(server, extra, param):
    client = sdk(server, server.add_user("alice", "pro"))
    body = {"model": "standard", "messages": HELLO, **extra}
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(**body)
    assert bad.value.body["type"] == "invalid_request_error" and bad.value.body["param"] == param


def test_errors_outside_the_handlers_keep_openais_shape(server):
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.post("/v1/chat/completions", json={"model": "x"}).json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "ky_wrong").models.list()
    token = server.add_user("alice", "pro")
    unknown = http.get("/v1/embeddings", headers={"Authorization": f"Bearer {token}"})
    assert unknown.status_code == 404 and set(unknown.json()["error"]) >= {"message", "type", "param", "code"}
    raw = http.post("/v1/chat/completions", content=b"{not json", headers={"Authorization": f"Bearer {token}",
                                                                          "content-type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["type"] == "invalid_request_error"
    assert http.get("/api/nope").json()["error"]["code"] == "not_found"  # Kynsey's own shape elsewhere


def test_with_storing_on_an_exchange_becomes_a_conversation_on_the_page(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, compat_store=True)
    token = server.add_user("alice", "pro")
    client, http = sdk(server, token), server.client(token)
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
               {"role": "assistant", "content": "Echo: first"}, {"role": "user", "content": "again"}]
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model="pro", messages=history, stream=True) if c.choices)
    assert text == "Echo: again"
    fake_ollama.fail[CODE] = "busy"
    assert client.chat.completions.create(model="code", messages=HELLO).model == "pro"
    listed = http.get("/api/conversations").json()["conversations"]
    assert sorted(c["title"] for c in listed) == ["first", "hello"]
    stored = {c["title"]: http.get(f"/api/conversations/{c['id']}").json()["messages"] for c in listed}
    assert [(m["role"], m["content"], m["status"]) for m in stored["first"]] == [
        ("user", "first", "complete"), ("assistant", "Echo: first", "complete"), ("user", "again", "complete"),
        ("assistant", "Echo: again", "complete")]
    reply = stored["hello"][-1]
    assert (reply["tier"], reply["fallback_from"], reply["content"]) == ("pro", "code", "Echo: hello")
    assert json.loads(json.dumps(reply))["tokens"] > 0


def test_a_client_that_leaves_releases_the_model_at_once(server, fake_ollama):
    """Stateless: the answer stops with its client; its model lease (which blocks an unload) goes with it."""
    fake_ollama.reply_tokens, fake_ollama.token_delay = 200, 0.05
    client = sdk(server, server.add_user("alice", "pro"))
    stream = client.chat.completions.create(model="standard", messages=HELLO, stream=True)
    assert next(iter(stream)).choices[0].delta.role == "assistant"
    assert server.call(_in_use) == 1
    stream.close()

    async def released(rt):
        import asyncio

        while rt.leases.in_use("ollama", STANDARD):
            await asyncio.sleep(0.02)
        return True

    assert server.call(released)
    assert len([1 for path, _ in fake_ollama.requests if path == "/api/chat"]) == 1


async def _in_use(rt) -> int:
    return rt.leases.in_use("ollama", STANDARD)


@pytest.mark.parametrize("store", [False, True])
def test_a_prompt_longer_than_the_context_is_openais_context_length_exceeded(start_server, tmp_path, store):
    """Clients test for OpenAI's code to trim a history and try again. Stored exchanges turn the reply's
    error event back into its class: before, this one came back as a 502 backend_error."""
    with FakeOpenAI(models=["mini"]) as fake:
        server = openai_server(start_server, tmp_path, fake, compat_store=store)
        client = sdk(server, server.add_user("sam", "standard"))
        fake.fail["mini"] = "context_full"
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as bad:
                answer = client.chat.completions.create(model="standard", messages=HELLO, stream=stream)
                if stream:
                    list(answer)
            assert bad.value.body["code"] == "context_length_exceeded", bad.value.body
