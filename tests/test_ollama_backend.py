"""OllamaBackend against a real fake Ollama on loopback (SPEC F2, F3)."""

from __future__ import annotations

import asyncio

import pytest

from kynsey.backends.base import ChatChunk, ChatMessage
from kynsey.backends.ollama import OllamaBackend
from kynsey.errors import (
    BackendBusy,
    BackendError,
    ModelLoadFailed,
    ModelMissing,
    StreamBroken,
)
from tests.live import eventually
from tests.proxy import FaultProxy
from tests.servers.fake_ollama import FakeOllama

MINI = "llama3.2:3b-instruct-fp16"
PRO = "qwen2.5:14b-instruct"
CODE = "qwen2.5-coder:7b-instruct"
HELLO = [ChatMessage("user", "hello there")]


@pytest.fixture
def fake():
    with FakeOllama({MINI: 6_000, PRO: 9_000}, loaded=[MINI]) as server:
        yield server


def run(scenario, *urls: str, read_timeout: float = 5.0, load_timeout: float = 5.0):
    """Run ``scenario(backend)`` with a fresh backend on a fresh event loop, then close it."""

    async def main():
        backend = OllamaBackend(
            "ollama", list(urls), connect_timeout=1.0, read_timeout=read_timeout, load_timeout=load_timeout
        )
        try:
            return await scenario(backend)
        finally:
            await backend.aclose()

    return asyncio.run(main())


async def collect(backend, model: str, messages=HELLO, **options) -> list[ChatChunk]:
    return [c async for c in backend.chat(model, messages, options=options, keep_alive="30m")]


async def collect_until_error(backend, model: str, received: list[ChatChunk], **options) -> None:
    async for chunk in backend.chat(model, [*HELLO, ChatMessage("user", "one two three four")], options=options, keep_alive="5m"):
        received.append(chunk)


# -- status --------------------------------------------------------------------------
def test_probe_reports_ready_cold_and_missing(fake):
    async def scenario(backend):
        return await backend.probe(timeout=2)

    snap = run(scenario, fake.url)
    host = snap.hosts[0]
    assert snap.reachable and host.version == "0.12.6" and host.latency_ms is not None
    ready, cold = snap.model(MINI), snap.model(PRO)
    assert ready.installed and ready.loaded and ready.expires_at and ready.size == 6_000 and ready.size_vram == 6_000
    assert cold.installed and not cold.loaded and cold.expires_at is None
    assert snap.model(CODE) is None
    assert ready.details["family"] == "llama"


def test_names_without_tag_are_canonicalised_to_latest():
    with FakeOllama({"llama3.2": 100}, loaded=["llama3.2"]) as fake:

        async def scenario(backend):
            snap = await backend.probe(timeout=2)
            return snap, await collect(backend, "llama3.2")

        snap, chunks = run(scenario, fake.url)
        assert snap.model("llama3.2:latest").loaded
        assert chunks[-1].done
        assert fake.last("/api/chat")["model"] == "llama3.2:latest"


# -- load / unload -------------------------------------------------------------------------
def test_load_sends_options_and_keep_alive(fake):
    async def scenario(backend):
        return await backend.load(PRO, keep_alive="30m", options={"num_ctx": 8192, "temperature": 0.7})

    assert run(scenario, fake.url) >= 0
    body = fake.last("/api/generate")
    assert body == {"model": PRO, "keep_alive": "30m", "options": {"num_ctx": 8192, "temperature": 0.7}}
    assert fake.load_count[PRO] == 1 and fake.loaded[PRO].num_ctx == 8192


def test_unload_frees_the_model(fake):
    async def scenario(backend):
        await backend.unload(MINI)

    run(scenario, fake.url)
    assert MINI not in fake.loaded
    assert fake.last("/api/generate") == {"model": MINI, "keep_alive": 0}


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("missing", ModelMissing),
        ("busy", BackendBusy),
        ("load_fail", ModelLoadFailed),
        ("error_500", ModelLoadFailed),  # any 500 while loading is a failed load
        ("stream_error", ModelLoadFailed),  # a 200 whose body is {"error": ...}
        ("hang", ModelLoadFailed),  # no answer within load_timeout
    ],
)
def test_load_failures(fake, mode, error):
    fake.fail[PRO] = mode

    async def scenario(backend):
        with pytest.raises(error) as caught:
            await backend.load(PRO, keep_alive="5m", options={})
        return caught.value

    exc = run(scenario, fake.url, load_timeout=0.3)
    assert type(exc) is error and exc.details["model"] == PRO
    assert PRO not in fake.loaded


# -- chat ------------------------------------------------------------------------------------
def test_chat_streams_text_and_converts_figures_to_ms(fake):
    fake.load_delay = 0.0123

    async def scenario(backend):
        return await collect(backend, PRO, [ChatMessage("system", "be brief"), ChatMessage("user", "hi you")])

    chunks = run(scenario, fake.url)
    *parts, final = chunks
    # the done line may come in the same read as the last tokens: their text then rides on it
    assert "".join(c.text for c in chunks) == "Echo: hi you"
    assert not any(c.done for c in parts)
    assert final.done and final.tokens == 3 and final.prompt_tokens == 4 and final.done_reason == "stop"
    assert final.load_ms == 12.3  # load_duration 12_300_000 ns
    body = fake.last("/api/chat")
    assert body["stream"] is True and body["keep_alive"] == "30m"
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi you"}]


def test_chat_on_a_loaded_model_reports_no_load_and_passes_options(fake):
    async def scenario(backend):
        return await collect(backend, MINI, num_predict=2, temperature=0.1)

    final = run(scenario, fake.url)[-1]
    assert final.load_ms == 0.0 and final.tokens == 2 and final.done_reason == "length"
    assert fake.last("/api/chat")["options"] == {"num_predict": 2, "temperature": 0.1}


def test_a_chat_whose_model_fails_to_load_is_model_load_failed(fake):
    """Ollama's 500 while loading; the failures every backend shares are in test_backend_contract.py."""
    fake.fail[MINI] = "load_fail"
    received: list[ChatChunk] = []

    async def scenario(backend):
        with pytest.raises(BackendError) as caught:
            await collect_until_error(backend, MINI, received)
        return caught.value

    exc = run(scenario, fake.url)
    assert type(exc) is ModelLoadFailed
    assert received == []


# -- several hosts -----------------------------------------------------------------------------
def test_requests_prefer_the_host_where_the_model_is_loaded():
    with FakeOllama({PRO: 1}) as first, FakeOllama({PRO: 1}, loaded=[PRO]) as second:

        async def scenario(backend):
            await backend.probe(timeout=2)
            return await collect(backend, PRO)

        run(scenario, first.url, second.url)
        assert [p for p, _ in first.requests if p == "/api/chat"] == []
        assert [p for p, _ in second.requests if p == "/api/chat"] == ["/api/chat"]
        assert first.load_count[PRO] == 0 and second.load_count[PRO] == 0


# -- regressions: bugs these tests found in kynsey/backends/ollama.py, fixed in 30d2de4 ----------------
def test_a_cold_chat_may_take_the_load_timeout_to_start(fake):
    fake.load_delay = 0.6  # longer than read_timeout, well within load_timeout

    async def scenario(backend):
        await backend.probe(timeout=2)
        return await collect(backend, PRO)

    final = run(scenario, fake.url, read_timeout=0.3, load_timeout=5)[-1]
    assert final.done and final.load_ms == 600.0


def test_a_line_that_is_not_an_object_breaks_the_stream():
    with pytest.raises(StreamBroken):
        OllamaBackend._chunk(MINI, "[1, 2]", False)


def test_a_load_answered_with_cut_json_is_a_backend_error(fake):
    fake.fail[PRO] = "truncate"

    async def scenario(backend):
        with pytest.raises(BackendError):
            await backend.load(PRO, keep_alive="5m", options={})

    run(scenario, fake.url)


def test_a_host_that_died_since_the_last_probe_fails_over_to_the_next():
    with FakeOllama({MINI: 1}, loaded=[MINI]) as first, FakeOllama({MINI: 1}, loaded=[MINI]) as second:

        async def scenario():
            backend = OllamaBackend("o", [first.url, second.url], connect_timeout=1, read_timeout=5, load_timeout=5)
            try:
                await backend.probe(timeout=2)  # both hosts look healthy
                first.stop()
                chunks = [c async for c in backend.chat(MINI, [ChatMessage("user", "hi")], options={}, keep_alive="5m")]
                await backend.load(MINI, keep_alive="5m", options={})
                return chunks
            finally:
                await backend.aclose()

        chunks = asyncio.run(scenario())
        assert chunks[-1].done and "".join(c.text for c in chunks) == "Echo: hi"
        assert [p for p, _ in second.requests].count("/api/chat") == 1
        assert [p for p, _ in second.requests].count("/api/generate") == 1


def test_kept_alive_connections_the_server_dropped_are_replaced_not_failed(fake):
    """A server may close the idle connections Kynsey keeps (a restart, an idle timeout, a proxy in
    between): the next chat and load go out on new connections, and the host is not marked down."""
    with FaultProxy("127.0.0.1", int(fake.url.rsplit(":", 1)[1])) as proxy:

        async def scenario():
            backend = OllamaBackend("o", [f"http://{proxy.url_host}"], connect_timeout=1, read_timeout=5, load_timeout=5)
            try:
                await backend.probe(timeout=2)  # three requests at once: three kept connections
                await collect_from(backend)
                proxy.cut()  # every connection closed by the far end, none yet seen closed here
                proxy.restore()
                chunks = await collect_from(backend)
                await backend.load(MINI, keep_alive="5m", options={})
                return chunks, backend.snapshot.hosts[0].reachable
            finally:
                await backend.aclose()

        chunks, reachable = asyncio.run(scenario())
    assert chunks[-1].done and "".join(c.text for c in chunks) == "Echo: hi"
    assert reachable


async def collect_from(backend: OllamaBackend) -> list[ChatChunk]:
    return [c async for c in backend.chat(MINI, [ChatMessage("user", "hi")], options={}, keep_alive="5m")]


def test_figures_of_the_wrong_type_in_the_done_line_are_dropped_not_fatal():
    chunk = OllamaBackend._chunk(MINI, '{"done":true,"eval_count":"many","load_duration":[1],"done_reason":7}', True)
    assert (chunk.done, chunk.tokens, chunk.load_ms, chunk.done_reason) == (True, None, None, None)


def test_a_server_that_lingers_or_sends_garbage_after_the_done_line_still_completes_the_reply(fake):
    """After the last line the rest of the body is read briefly (so a finished connection is reused);
    a server that keeps the body open, or sends more, costs that connection, not the reply."""
    fake.fail[MINI] = "linger"

    async def scenario(backend):
        first = await collect(backend, MINI)
        fake.fail.pop(MINI)
        return first, await collect(backend, MINI)

    first, second = run(scenario, fake.url)
    assert first[-1].done and "".join(c.text for c in first).strip()  # the done chunk may carry the last text
    assert second[-1].done
    eventually(lambda: fake.clients_gone >= 1, "the fake to see the lingering body let go")
