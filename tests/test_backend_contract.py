"""The contract every backend keeps, whatever its protocol (SPEC F2, F3).

Each case runs against every backend it applies to: Ollama and an OpenAI-compatible
server (real backends against the loopback fakes in tests/servers/), and the
in-process llama.cpp backend with the packaged SmolLM2 where no server is involved.
What only one protocol does (its wire format, its options, its load semantics)
is tested in that backend's own module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kynsey.backends.base import Backend, ChatChunk, ChatMessage
from kynsey.backends.ollama import OllamaBackend
from kynsey.backends.openai_compat import OpenAIBackend
from kynsey.errors import BackendBusy, BackendError, BackendUnreachable, ModelMissing, StreamBroken
from tests.live import eventually
from tests.servers.fake_ollama import FakeOllama
from tests.servers.fake_openai import FakeOpenAI

MINI = "llama3.2:3b-instruct-fp16"
HELLO = [ChatMessage("user", "hello there")]
ONE_TWO_THREE = [ChatMessage("user", "one two three four")]  # a failure strikes after "Echo:", " one"
LONG_REPLY = " ".join(f"w{i}" for i in range(200))
STORY = [ChatMessage("user", "Write a very long story about a dragon.")]  # SmolLM2 runs it to num_predict
LONG_RUN = {"num_predict": 1500, "num_ctx": 2048, "temperature": 0}
WAIT_LIMIT_S = 60  # a bound on waits for the backend to let go, not a timing assertion


class Remote:
    """A backend in front of a loopback fake server, and what the cases need to know of it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.model, self.missing = MINI, "not-served:latest"
        self.chat_path = "/api/chat" if kind == "ollama" else "/v1/chat/completions"
        self.fake = self.new_fake().start()

    def new_fake(self) -> FakeOllama | FakeOpenAI:
        return FakeOllama({MINI: 6_000}, loaded=[MINI]) if self.kind == "ollama" else FakeOpenAI([MINI])

    def backend(self, *urls: str, read_timeout: float = 5.0) -> Backend:
        hosts = list(urls) or [self.fake.url]
        timeouts = {"connect_timeout": 1.0, "read_timeout": read_timeout, "load_timeout": 5.0}
        if self.kind == "ollama":
            return OllamaBackend(self.kind, hosts, **timeouts)
        return OpenAIBackend(self.kind, hosts, api_key=None, **timeouts)

    def long_chat(self, backend: Backend) -> AsyncIterator[ChatChunk]:
        self.fake.reply, self.fake.token_delay = LONG_REPLY, 0.01
        return backend.chat(self.model, HELLO, options={}, keep_alive="5m")

    def let_go(self, backend: Backend) -> bool:
        """The stream closed early is closed on the server too: it stopped sending."""
        return self.fake.clients_gone >= 1

    def close(self) -> None:
        self.fake.stop()


class Local:
    """The in-process llama.cpp backend with the packaged SmolLM2."""

    kind = "local"

    def __init__(self, data_dir: Path) -> None:
        self.model, self.missing, self.data_dir = "smollm2", "no-such-model", data_dir

    def backend(self) -> Backend:
        from kynsey.backends.local import LocalBackend
        from kynsey.catalog.schema import BackendConfig, TierProfile

        tier = TierProfile(tier="standard", display_name="Standard", internal_name="KYNSEY standard",
                           model_id=self.model, backend="local")
        return LocalBackend("local", BackendConfig(kind="local"), [tier], data_dir=self.data_dir)

    def long_chat(self, backend: Backend) -> AsyncIterator[ChatChunk]:
        return backend.chat(self.model, STORY, options=LONG_RUN, keep_alive="5m")

    def let_go(self, backend: Any) -> bool:
        """White box: no one holds the model, and the worker stopped far short of num_predict."""
        slot = backend._slots[self.model]
        return slot.users == 0 and slot.runner.counts[1] < 100

    def close(self) -> None:
        pass


@contextmanager
def harness_for(kind: str, tmp_path: Path) -> Iterator[Remote | Local]:
    harness = Local(tmp_path) if kind == "local" else Remote(kind)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(params=["ollama", "openai", "local"])
def every(request, tmp_path) -> Iterator[Remote | Local]:
    with harness_for(request.param, tmp_path) as harness:
        yield harness


@pytest.fixture(params=["ollama", "openai"])
def remote(request, tmp_path) -> Iterator[Remote]:
    with harness_for(request.param, tmp_path) as harness:
        assert isinstance(harness, Remote)
        yield harness


def run(backend: Backend, scenario: Callable[[Backend], Any]) -> Any:
    """Run ``scenario(backend)`` on a fresh event loop, then close the backend."""

    async def main():
        try:
            return await scenario(backend)
        finally:
            await backend.aclose()

    return asyncio.run(main())


async def collect(backend: Backend, model: str, received: list[ChatChunk], messages=HELLO) -> list[ChatChunk]:
    async for chunk in backend.chat(model, messages, options={}, keep_alive="5m"):
        received.append(chunk)
    return received


def text(chunks: list[ChatChunk]) -> str:
    """The reply's text as the answer core takes it: the done chunk carries the text that came
    in the same read as the final line."""
    return "".join(c.text for c in chunks)


# -- every backend ---------------------------------------------------------------------------
def test_a_chat_streams_text_then_one_done_chunk_with_figures(every):
    async def scenario(backend):
        return await collect(backend, every.model, [])

    chunks = run(every.backend(), scenario)
    *parts, final = chunks
    assert text(chunks).strip() and not any(c.done for c in parts)
    assert final.done and final.tokens > 0 and final.done_reason in ("stop", "length")


def test_a_model_the_backend_does_not_have_is_missing(every):
    received: list[ChatChunk] = []

    async def scenario(backend):
        with pytest.raises(ModelMissing):
            await backend.load(every.missing, keep_alive="5m", options={})
        with pytest.raises(ModelMissing):
            await collect(backend, every.missing, received)

    run(every.backend(), scenario)
    assert received == []


def test_closing_a_stream_early_lets_go_of_it_and_the_next_chat_is_answered(every):
    async def scenario(backend):
        stream = every.long_chat(backend)
        for _ in range(3):
            await anext(stream)
        await stream.aclose()
        await asyncio.to_thread(eventually, lambda: every.let_go(backend), "the backend let go of the closed stream",
                                timeout=WAIT_LIMIT_S)
        return await collect(backend, every.model, [], messages=HELLO)

    assert run(every.backend(), scenario)[-1].done


def test_aclose_during_a_stream_breaks_the_stream(every):
    async def scenario(backend):
        stream = every.long_chat(backend)
        await anext(stream)
        await backend.aclose()
        with pytest.raises(StreamBroken):
            async for _ in stream:
                pass

    run(every.backend(), scenario)


# -- backends behind a server ------------------------------------------------------------------
def test_chats_in_a_row_reuse_one_connection(remote):
    """A consumer that stops at the done chunk (as the answer core does) leaves the connection in
    the pool: the end of the body is read first, so the next chat pays no new connection."""

    async def scenario(backend):
        for _ in range(3):
            stream = backend.chat(remote.model, HELLO, options={}, keep_alive="5m")
            async for chunk in stream:
                if chunk.done:
                    break
            await stream.aclose()

    run(remote.backend(), scenario)
    chats = [peer for (path, _), peer in zip(remote.fake.requests, remote.fake.peers, strict=True)
             if path == remote.chat_path]
    assert len(chats) == 3 and len(set(chats)) == 1, chats


def test_a_stopped_server_is_unreachable_to_probe_load_and_chat(remote):
    remote.fake.stop()
    received: list[ChatChunk] = []

    async def scenario(backend):
        snap = await backend.probe(timeout=2)
        with pytest.raises(BackendUnreachable):
            await backend.load(remote.model, keep_alive="5m", options={})
        with pytest.raises(BackendUnreachable):
            await collect(backend, remote.model, received)
        return snap

    snap = run(remote.backend(), scenario)
    assert not snap.reachable and snap.hosts[0].error and snap.model(remote.model) is None
    assert received == []


def test_a_slow_server_is_unreachable_once_the_probe_times_out(remote):
    remote.fake.status_delay = 30  # far beyond both timeouts below: a probe that waited for it fails the wait_for

    async def scenario(backend):
        return await asyncio.wait_for(backend.probe(timeout=0.2), timeout=5)

    snap = run(remote.backend(), scenario)
    assert not snap.reachable and snap.hosts[0].error == "no answer within 0.2s"


@pytest.mark.parametrize(("mode", "error"), [("missing", ModelMissing), ("busy", BackendBusy), ("error_500", BackendError)])
def test_a_failure_before_the_first_token_is_its_error_and_no_chunk(remote, mode, error):
    remote.fake.fail[remote.model] = mode
    received: list[ChatChunk] = []

    async def scenario(backend):
        with pytest.raises(BackendError) as caught:
            await collect(backend, remote.model, received)
        return caught.value

    exc = run(remote.backend(), scenario)
    assert type(exc) is error and exc.details["model"] == remote.model
    assert received == []


@pytest.mark.parametrize("mode", ["stream_error", "disconnect", "truncate", "malformed"])
def test_a_stream_broken_after_some_tokens_is_stream_broken(remote, mode):
    remote.fake.fail[remote.model] = mode
    received: list[ChatChunk] = []

    async def scenario(backend):
        with pytest.raises(StreamBroken):
            await collect(backend, remote.model, received, messages=ONE_TWO_THREE)

    run(remote.backend(), scenario)
    assert text(received) == "Echo: one" and not any(c.done for c in received)


OLLAMA_LINES = [
    b'{"message":"oops","done":false}\n',  # a string message
    b'{"message":{"role":"assistant","content":5},"done":false}\n',  # a numeric content
    b'{"message":["x"],"done":false}\n',
    b'{"message":{"content":{"a":1}},"done":false}\n',
    b'[1,2]\n',
    b'{"message":{"content":"x"\n',  # cut JSON
]
OPENAI_LINES = [
    b'data: {"choices":[{"index":0,"delta":{"content":5},"finish_reason":null}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":"text","finish_reason":null}]}\n\n',
    b'data: {"choices":"all of them"}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":3}]}\n\n',
    b'data: [1, 2]\n\n',
]


WRONG_LINES = [("ollama", line) for line in OLLAMA_LINES] + [("openai", line) for line in OPENAI_LINES]


@pytest.mark.parametrize(("kind", "line"), [pytest.param(k, line, id=f"{k}-{i}") for i, (k, line) in enumerate(WRONG_LINES)])
def test_a_line_of_the_wrong_shape_is_stream_broken(kind, line, tmp_path):
    received: list[ChatChunk] = []
    with harness_for(kind, tmp_path) as harness:
        harness.fake.fail[harness.model] = "malformed"
        harness.fake.malformed_line = line

        async def scenario(backend):
            with pytest.raises(StreamBroken):
                await collect(backend, harness.model, received, messages=ONE_TWO_THREE)

        run(harness.backend(), scenario)
    assert text(received) == "Echo: one" and not any(c.done for c in received)


def test_a_server_that_dies_mid_stream_breaks_the_stream(remote):
    remote.fake.reply = LONG_REPLY
    remote.fake.token_delay = 0.02  # long enough that the stop lands mid-reply
    received: list[ChatChunk] = []

    async def scenario(backend):
        with pytest.raises(StreamBroken):
            async for chunk in backend.chat(remote.model, HELLO, options={}, keep_alive="5m"):
                received.append(chunk)
                if len(received) == 3:
                    await asyncio.to_thread(remote.fake.stop)

    run(remote.backend(), scenario)
    assert 3 <= len(received) < 200 and not any(c.done for c in received)


def test_a_chat_that_never_answers_fails_after_the_read_timeout(remote):
    remote.fake.fail[remote.model] = "hang"

    async def scenario(backend):
        await backend.probe(timeout=2)  # the model is in memory: only the read timeout applies
        with pytest.raises(BackendError):
            await asyncio.wait_for(collect(backend, remote.model, []), timeout=5)

    run(remote.backend(read_timeout=0.3), scenario)


def test_requests_go_to_the_healthy_host(remote):
    second = remote.new_fake().start()
    try:
        remote.fake.stop()

        async def scenario(backend):
            snap = await backend.probe(timeout=2)
            await backend.load(remote.model, keep_alive="5m", options={})
            return snap, await collect(backend, remote.model, [])

        snap, chunks = run(remote.backend(remote.fake.url, second.url), scenario)
    finally:
        second.stop()
    assert [h.reachable for h in snap.hosts] == [False, True]
    assert chunks[-1].done and [p for p, _ in second.requests].count(remote.chat_path) == 1
