"""OpenAIBackend against a real fake OpenAI-compatible server on loopback (SPEC F2, F3)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kynsey.backends.base import ChatChunk, ChatMessage
from kynsey.backends.openai_compat import OpenAIBackend, SSEReader, _Reply, base_url, request_options
from kynsey.errors import BackendBusy, BackendError, ModelMissing, PromptTooLong, StreamBroken
from tests.servers.fake_openai import FakeOpenAI

MINI = "llama3.2:3b-instruct-fp16"
PRO = "qwen2.5:14b-instruct"
HELLO = [ChatMessage("user", "hello there")]


@pytest.fixture
def fake():
    with FakeOpenAI([MINI, PRO]) as server:
        yield server


def run(scenario, *urls: str, api_key: str | None = None, read_timeout: float = 5.0):
    """Run ``scenario(backend)`` with a fresh backend on a fresh event loop, then close it."""

    async def main():
        backend = OpenAIBackend(
            "openai", list(urls), api_key=api_key, connect_timeout=1.0, read_timeout=read_timeout, load_timeout=5.0
        )
        try:
            return await scenario(backend)
        finally:
            await backend.aclose()

    return asyncio.run(main())


async def collect(backend, model: str, messages=HELLO, **options) -> list[ChatChunk]:
    return [c async for c in backend.chat(model, messages, options=options, keep_alive="5m")]


# -- the fake speaks the protocol --------------------------------------------------------------
def test_fake_streams_server_sent_events_ending_with_done(fake):
    body = {"model": MINI, "stream": True, "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "a b"}]}
    with httpx.stream("POST", fake.url + "/v1/chat/completions", json=body) as resp:
        assert resp.headers["content-type"] == "text/event-stream"
        events = [line[len("data: "):] for line in resp.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MINI for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Echo: a b"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_fake_lists_models_and_requires_its_api_key():
    with FakeOpenAI([MINI], api_key="sekrit") as fake:
        assert httpx.get(fake.url + "/v1/models").status_code == 401
        listed = httpx.get(fake.url + "/v1/models", headers={"Authorization": "Bearer sekrit"}).json()
        assert listed["object"] == "list"
        assert [(m["id"], m["object"]) for m in listed["data"]] == [(MINI, "model")]


# -- status --------------------------------------------------------------------------------------
def test_probe_lists_every_model_as_installed_and_loaded(fake):
    async def scenario(backend):
        return await backend.probe(timeout=2)

    snap = run(scenario, fake.url)
    assert snap.reachable and snap.hosts[0].version is None and snap.hosts[0].latency_ms is not None
    assert snap.model(MINI).loaded and snap.model(PRO).installed
    assert snap.model("nope") is None


def test_probe_reads_the_version_when_the_server_has_one(fake):
    fake.version = "0.6.3"

    async def scenario(backend):
        return await backend.probe(timeout=2)

    assert run(scenario, fake.url + "/v1/").hosts[0].version == "0.6.3"


def test_api_key_is_sent_and_a_wrong_one_is_refused():
    with FakeOpenAI([MINI], api_key="sekrit") as fake:

        async def scenario(backend):
            return await backend.probe(timeout=2)

        assert run(scenario, fake.url, api_key="sekrit").reachable
        refused = run(scenario, fake.url, api_key="wrong")
        assert not refused.reachable and "401" in refused.hosts[0].error

        async def chat(backend):
            with pytest.raises(BackendError, match="API key"):
                await collect(backend, MINI)

        run(chat, fake.url, api_key="wrong")


# -- load / unload ---------------------------------------------------------------------------------
def test_load_checks_the_model_is_listed(fake):
    async def scenario(backend):
        took = await backend.load(MINI, keep_alive="5m", options={"num_ctx": 4096})
        with pytest.raises(ModelMissing):
            await backend.load("nope", keep_alive="5m", options={})
        await backend.unload(MINI)
        return took

    assert run(scenario, fake.url) == 0.0
    assert [path for path, _ in fake.requests] == ["/v1/models", "/v1/models"]  # unload sends nothing


# -- chat ------------------------------------------------------------------------------------------
def test_chat_streams_deltas_then_usage(fake):
    async def scenario(backend):
        return await collect(backend, PRO, [ChatMessage("system", "be brief"), ChatMessage("user", "hi you")])

    *parts, final = run(scenario, fake.url)
    assert "".join(c.text for c in parts) == "Echo: hi you"
    assert final == ChatChunk(done=True, tokens=3, prompt_tokens=4, done_reason="stop")
    body = fake.last("/v1/chat/completions")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi you"}]


def test_chat_maps_tier_options_to_openai_fields(fake):
    async def scenario(backend):
        return await collect(backend, MINI, temperature=0.2, top_p=0.9, num_predict=2, seed=7, num_ctx=8192, stop=["\n"])

    final = run(scenario, fake.url)[-1]
    assert final.tokens == 2 and final.done_reason == "length"
    body = fake.last("/v1/chat/completions")
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "seed", "stop")} == {
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 2, "seed": 7, "stop": ["\n"],
    }
    assert "num_ctx" not in body and "num_predict" not in body


def test_request_options_drop_unlimited_and_unknown_values():
    assert request_options({"num_predict": -1, "num_ctx": 4096, "temperature": None}) == {}
    assert request_options({"max_tokens": 10}) == {"max_tokens": 10}


def test_base_url_accepts_the_v1_form_clients_use():
    assert base_url("http://h:8000/v1/") == "http://h:8000"
    assert base_url("h:8080") == "http://h:8080"


@pytest.mark.parametrize(
    ("mode", "error"),
    [("rate_limited", BackendBusy), ("load_fail", BackendError)],  # the shared ones: test_backend_contract.py
)
def test_chat_failures_before_the_first_token(fake, mode, error):
    fake.fail[MINI] = mode
    received: list[ChatChunk] = []

    async def scenario(backend):
        with pytest.raises(BackendError) as caught:
            async for chunk in backend.chat(MINI, HELLO, options={}, keep_alive="5m"):
                received.append(chunk)
        return caught.value

    exc = run(scenario, fake.url)
    assert type(exc) is error and exc.details["model"] == MINI
    assert received == []


@pytest.mark.parametrize("mode", ["context_full", "context_size", "context_words"])
def test_a_prompt_longer_than_the_context_is_refused_and_no_host_breaker_counts_it(mode):
    """The request's fault, not the host's: counted, three long messages would close the host to every model."""
    with FakeOpenAI([MINI]) as a, FakeOpenAI([MINI]) as b:
        a.fail[MINI] = b.fail[MINI] = mode

        async def scenario(backend):
            await backend.probe(timeout=2)
            for _ in range(4):  # more than breaker_failures
                with pytest.raises(PromptTooLong, match="longer than the model's context"):
                    await collect(backend, MINI)
            return [backend.host_load(url).breaker for url in (a.url, b.url)]

        assert run(scenario, a.url, b.url) == ["closed", "closed"]


def test_a_stream_without_usage_counts_its_chunks():
    reply, events = _Reply(), SSEReader()
    lines = ['data: {"choices":[{"index":0,"delta":{"content":"a"}}]}', "", ": keep-alive", "",
             'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}', ""]
    texts = []
    for line in lines:
        data = events.feed(line)
        if data is not None:
            chunk = OpenAIBackend._chunk(MINI, data, reply)
            texts.append(chunk.text if chunk else None)
    assert texts == ["a", "b"]
    assert reply.final() == ChatChunk(done=True, tokens=2, prompt_tokens=None, done_reason="stop")


# -- the fake's command line ------------------------------------------------------------------------
def test_command_line_serves_a_fixed_number_of_tokens():
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "tests.servers.fake_openai", "--port", "0", "--reply-tokens", "7", "--models", "a,b"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")

        async def scenario(backend):
            snap = await backend.probe(timeout=2)
            return snap, await collect(backend, "a")

        snap, chunks = run(scenario, url)
        assert sorted(snap.hosts[0].models) == ["a", "b"]
        assert sum(c.count for c in chunks[:-1]) == 7 and chunks[-1].tokens == 7  # chunks merge per network read
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_done_without_a_finish_reason_is_not_a_complete_reply(fake):
    """llama.cpp's server ends a stream it cuts short with [DONE] and no finish_reason."""
    fake.fail[MINI] = "cut_done"
    received: list[ChatChunk] = []

    async def scenario(backend):
        with pytest.raises(StreamBroken, match="finish_reason"):
            async for chunk in backend.chat(MINI, [ChatMessage("user", "one two three")], options={}, keep_alive="5m"):
                received.append(chunk)

    run(scenario, fake.url)
    assert "".join(c.text for c in received) == "Echo: one" and not any(c.done for c in received)
