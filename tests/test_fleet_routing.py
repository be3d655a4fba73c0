"""Fleet routing: a backend with several Ollama hosts sends each model to the host that holds it,
else to the least busy host with room, and skips a host that keeps failing (issue 12, SPEC N5).

Every host is a real fake Ollama on its own loopback port.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import httpx

from kynsey.backends.base import ChatMessage
from kynsey.backends.ollama import OllamaBackend
from tests.live import eventually
from tests.servers.fake_ollama import FakeOllama

MINI = "llama3.2:3b-instruct-fp16"
PRO = "qwen2.5:14b-instruct"
CODE = "qwen2.5-coder:7b-instruct"
MODELS = {MINI: 1, PRO: 1, CODE: 1}
HI = [ChatMessage("user", "hi")]
LONG = " ".join(f"w{i}" for i in range(400))


def fleet(stack: ExitStack, *loaded: list[str], capacity: int | None = None) -> list[FakeOllama]:
    fakes = [stack.enter_context(FakeOllama(dict(MODELS), loaded=models)) for models in loaded]
    for fake in fakes:
        fake.capacity = capacity
    return fakes


def backend_for(fakes: list[FakeOllama], **options) -> OllamaBackend:
    return OllamaBackend("ollama", [f.url for f in fakes], connect_timeout=1, read_timeout=5, load_timeout=5, **options)


async def chat(backend: OllamaBackend, model: str, text: str = "hi") -> str:
    chunks = [c async for c in backend.chat(model, [ChatMessage("user", text)], options={}, keep_alive="30m")]
    assert chunks[-1].done
    return "".join(c.text for c in chunks)


async def until(check, what: str) -> None:
    """Wait, without blocking the loop, until ``check()`` holds (never a timed assertion)."""
    await asyncio.to_thread(eventually, check, what)


def chats(fake: FakeOllama, model: str) -> int:
    return sum(1 for path, body in fake.requests if path == "/api/chat" and body.get("model") == model)


def test_a_request_goes_to_a_host_that_holds_the_model_the_least_busy_of_them():
    # b and c hold PRO; b is busy with a long stream of it; a holds only MINI.
    with ExitStack() as stack:
        a, b, c = fleet(stack, [MINI], [PRO, CODE], [PRO])
        b.reply, b.token_delay = LONG, 0.01

        async def scenario():
            backend = backend_for([a, b, c])
            try:
                await backend.probe(timeout=2)
                running = asyncio.ensure_future(chat(backend, PRO))
                await until(lambda: backend.host_load(b.url).streaming == 1, "a long stream on host b")
                for _ in range(3):
                    await chat(backend, PRO)
                await backend.load(CODE, keep_alive="30m", options={})
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
            finally:
                await backend.aclose()

        asyncio.run(scenario())
        assert (chats(a, PRO), chats(b, PRO), chats(c, PRO)) == (0, 1, 3)
        assert sum(f.load_count[m] for f in (a, b, c) for m in MODELS) == 0  # nothing loaded anywhere


def test_a_model_nobody_holds_goes_to_the_least_busy_host_with_room():
    # a: busy (a long stream of MINI); b: idle with room; c: idle but full (2 of 2).
    with ExitStack() as stack:
        a, b, c = fleet(stack, [MINI], [CODE], [MINI, CODE], capacity=2)
        a.reply, a.token_delay = LONG, 0.01

        async def scenario():
            backend = backend_for([a, b, c], max_loaded=2)
            try:
                await backend.probe(timeout=2)
                running = asyncio.ensure_future(chat(backend, MINI))
                await until(lambda: backend.host_load(a.url).streaming == 1, "a long stream on host a")
                await chat(backend, PRO)
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
            finally:
                await backend.aclose()

        asyncio.run(scenario())
        assert (a.load_count[PRO], b.load_count[PRO], c.load_count[PRO]) == (0, 1, 0)
        assert CODE in b.loaded and CODE in c.loaded and MINI in c.loaded  # nobody evicted anything


def test_after_a_load_the_next_requests_go_to_the_same_host_without_waiting_for_a_probe():
    with ExitStack() as stack:
        a, b, c = fleet(stack, [], [], [])
        a.reply, a.token_delay = LONG, 0.01

        async def scenario():
            backend = backend_for([a, b, c])
            try:
                await backend.probe(timeout=2)
                running = asyncio.ensure_future(chat(backend, MINI))  # a is busy from now on
                await until(lambda: backend.host_load(a.url).streaming == 1, "a long stream on host a")
                await backend.load(PRO, keep_alive="30m", options={})  # to b: idle, and first of the idle ones
                held = [PRO in h.models and h.models[PRO].loaded for h in backend.snapshot.hosts]
                b.reply, b.token_delay = LONG, 0.01
                slow = asyncio.ensure_future(chat(backend, PRO))
                await until(lambda: backend.host_load(b.url).streaming == 1, "a long stream on host b")
                await chat(backend, PRO)  # b holds it: b, although it is busier than c
                for task in (running, slow):
                    task.cancel()
                await asyncio.gather(running, slow, return_exceptions=True)
                return held
            finally:
                await backend.aclose()

        assert asyncio.run(scenario()) == [False, True, False]
        assert (a.load_count[PRO], b.load_count[PRO], c.load_count[PRO]) == (0, 1, 0)
        assert chats(b, PRO) == 2 and chats(c, PRO) == 0


def test_a_lost_host_costs_one_reload_per_model_it_held_on_a_host_with_room():
    with ExitStack() as stack:
        a, b, c, spare = fleet(stack, [MINI], [PRO], [CODE], [], capacity=1)

        async def scenario():
            backend = backend_for([a, b, c, spare], max_loaded=1)
            try:
                await backend.probe(timeout=2)
                a.stop()  # a dies holding MINI
                await asyncio.gather(*(chat(backend, MINI) for _ in range(5)))
                for model in (MINI, PRO, CODE) * 3:
                    await chat(backend, model)
                await backend.probe(timeout=2)
                for model in (MINI, PRO, CODE) * 3:
                    await chat(backend, model)
            finally:
                await backend.aclose()

        asyncio.run(scenario())
        loads = {f.url: dict(f.load_count) for f in (b, c, spare)}
        assert loads == {b.url: {}, c.url: {}, spare.url: {MINI: 1}}


def test_a_host_that_keeps_failing_is_skipped_for_a_cooldown_while_others_serve_its_models():
    with ExitStack() as stack:
        a, b = fleet(stack, [MINI], [MINI])
        a.fail[MINI] = "error_500"  # a answers probes but fails every chat

        async def scenario():
            backend = backend_for([a, b], breaker_failures=2, breaker_cooldown=600)
            try:
                await backend.probe(timeout=2)
                failed = 0
                for _ in range(6):
                    try:
                        await chat(backend, MINI)
                    except Exception:
                        failed += 1
                await backend.probe(timeout=2)  # a looks healthy to a probe: still skipped
                await chat(backend, MINI)
                return failed, backend.host_load(a.url).breaker
            finally:
                await backend.aclose()

        failed, breaker = asyncio.run(scenario())
        assert (failed, breaker) == (2, "open")
        assert chats(a, MINI) == 2 and chats(b, MINI) == 5


# -- through a real Kynsey -------------------------------------------------------------------
def fleet_catalog(tmp_path, urls: list[str], *, keep_warm: bool) -> str:
    path = tmp_path / "fleet.toml"
    tiers = "".join(
        f'\n[[tiers]]\ntier = "{slug}"\ndisplay_name = "{slug}"\ninternal_name = "{slug}"\nmodel_id = "{model}"\n'
        f'keep_warm = {"true" if keep_warm else "false"}\n'
        for slug, model in (("standard", MINI), ("pro", PRO), ("code", CODE))
    )
    path.write_text(
        'default_tier = "standard"\n'
        f'[backends.ollama]\nkind = "ollama"\nhosts = {urls!r}\n'.replace("'", '"')
        + '[plans.standard]\ngrants = ["standard", "pro", "code"]\n' + tiers
    )
    return str(path)


def test_keep_warm_spreads_three_warm_tiers_over_three_hosts(start_server, tmp_path):
    with ExitStack() as stack:
        hosts = fleet(stack, [], [], [], capacity=1)
        start_server(tiers=fleet_catalog(tmp_path, [f.url for f in hosts], keep_warm=True))
        eventually(lambda: all(len(f.loaded) == 1 for f in hosts), "each host holds one warm tier")
        assert sorted(m for f in hosts for m in f.loaded) == sorted(MODELS)
        probes = [f.requests.count(("/api/ps", {})) for f in hosts]
        eventually(lambda: all(f.requests.count(("/api/ps", {})) >= n + 5 for f, n in zip(hosts, probes, strict=True)),
                   "five more status refreshes")
        assert [sum(f.load_count.values()) for f in hosts] == [1, 1, 1]  # nothing moved


def test_status_shows_what_each_host_holds_and_only_admins_see_urls(start_server, tmp_path):
    with ExitStack() as stack:
        a, b = fleet(stack, [MINI], [PRO, CODE])
        srv = start_server(tiers=fleet_catalog(tmp_path, [a.url, b.url], keep_warm=False))
        srv.refresh_status()
        user, admin = srv.add_user("ann", "standard"), srv.add_user("root", "standard", admin=True)
        with srv.client(user) as client:
            seen = client.get("/api/models/status")
        with srv.client(admin) as client:
            admin_seen = client.get("/api/models/status").json()
        hosts = seen.json()["backends"][0]["hosts"]
        assert [(h["label"], h["reachable"], h["loaded"], h["streaming"]) for h in hosts] == [
            ("host 1", True, [MINI], 0), ("host 2", True, sorted([PRO, CODE]), 0)]
        assert a.url not in seen.text and b.url not in seen.text and "url" not in hosts[0]
        assert [h["url"] for h in admin_seen["backends"][0]["hosts"]] == [a.url, b.url]
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {user}"}) as client:
            assert client.get("/api/catalog/status").json()["backends"][0]["hosts"][1]["loaded"] == sorted([PRO, CODE])


def test_an_unload_frees_the_model_on_every_host_that_holds_it():
    with ExitStack() as stack:
        a, b, c = fleet(stack, [PRO], [MINI], [PRO, CODE])

        async def scenario():
            backend = backend_for([a, b, c])
            try:
                await backend.probe(timeout=2)
                await backend.unload(PRO)
            finally:
                await backend.aclose()

        asyncio.run(scenario())
        assert [sorted(f.loaded) for f in (a, b, c)] == [[], [MINI], [CODE]]


def test_a_host_capacity_is_learned_from_the_eviction_a_load_causes():
    with ExitStack() as stack:
        (a,) = fleet(stack, [MINI], capacity=1)

        async def scenario():
            backend = backend_for([a])  # no max_loaded: unknown until a load pushes a model out
            try:
                await backend.probe(timeout=2)
                before = backend.host_load(a.url).capacity
                await backend.load(PRO, keep_alive="30m", options={})
                await until(lambda: backend.host_load(a.url).capacity is not None, "capacity learned")
                return before, backend.host_load(a.url).capacity, backend.snapshot.hosts[0].models[MINI].loaded
            finally:
                await backend.aclose()

        assert asyncio.run(scenario()) == (None, 1, False)
