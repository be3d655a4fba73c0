"""N2: what Kynsey adds to chat, measured the way users run it, beside the backend direct.

    python -m bench.chat_bench [--db sqlite,postgres] [--ttft-requests 150] [--stream-runs 15] [--streams 200]
                               [--stream-tokens 2000]

The loopback Ollama runs in its own process and streams tokens as fast as it
can; Kynsey runs as `kynsey serve` in another, on the default SQLite and on
PostgreSQL (a private database). For each database, in one run:

- time to first token: requests interleaved with the same request sent straight
  to the backend, each Kynsey request in a fresh conversation created before the
  clock starts; p50 and p99 of both, and the difference. Interleaved too: the
  same request through ``bench/floor_relay.py``, the least an app on Kynsey's
  stack (FastAPI, uvicorn, aiohttp) adds, so that Kynsey's own share shows, and through the
  same relay as a bare ASGI app (no FastAPI), so that the framework's share shows;
- one stream of 200 and of 2,000 tokens: tokens/s through Kynsey over direct, the
  median of 15 interleaved runs, and through the floor and the bare relay beside it
  (a stream of 200 tokens lasts about 2 ms here, so its ratio is mostly the time to
  first token, and the bare relay's shows the most any app served by uvicorn can reach);
  and one stream of 200 tokens paced at 1,000 tokens/s, faster than any model
  this machine runs, so that the ratio shows what a user's stream loses;
- 200 concurrent streams of 2,000 tokens, each creating its conversation inside
  the round (as users do): aggregate tokens/s over direct, errors, streams that
  never ended, Kynsey's CPU time per relayed token, and its memory after each of
  three rounds (it must not grow with finished streams).

The OpenAI-compatible route (`POST /v1/chat/completions`, streamed, stateless)
is measured in the same run beside Kynsey's own SSE route: its TTFT (interleaved
with the other two), one stream of 200 and of 2,000 tokens, and one round of
200 concurrent streams.

The 1-minute load average is printed beside each figure: figures taken on a
busy machine are not comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import psutil

from bench.common import MODELS, ROOT, Kynsey, fake_ollama, free_port, kynsey_stream, percentile, report
from tests.pg import private_database

MODEL = MODELS[0]
HUNG_AFTER = 120.0  # seconds without an end: a hung stream
PACED_DELAY = 0.001  # seconds between tokens of the paced stream
SSL = ssl.create_default_context()  # one for every client: making one costs milliseconds


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


async def direct_stream(client: httpx.AsyncClient, url: str, model: str = MODEL) -> tuple[float, int, float]:
    """(ttft s, tokens, seconds from first token to end) straight from the backend."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", f"{url}/api/chat", json=body) as resp:
        async for line in resp.aiter_lines():
            if not line:
                continue
            data = json.loads(line)
            if data.get("done"):
                break
            if first is None:
                first = time.perf_counter()
            tokens += 1
    return first - started, tokens, time.perf_counter() - first


async def openai_stream(client: httpx.AsyncClient, tier: str) -> tuple[float, int, float]:
    """(ttft s, tokens, seconds from first token to end) through /v1/chat/completions; raises on any error."""
    body = {"model": tier, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first, tokens = None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"/v1 answered {resp.status_code}: {(await resp.aread())[:200]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter()
            elif line.startswith('data: {"error"'):
                raise RuntimeError(f"/v1 error: {line[6:200]}")
            elif '"usage":{' in line:
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    if first is None or not tokens:
        raise RuntimeError("the /v1 stream ended without a reply")
    return first - started, tokens, time.perf_counter() - first


async def new_conversation(client: httpx.AsyncClient) -> str:
    resp = await client.post("/api/conversations", json={})
    if resp.status_code != 201:
        raise RuntimeError(f"creating a conversation answered {resp.status_code}: {resp.text[:200]}")
    return resp.json()["id"]


async def ttft(direct: httpx.AsyncClient, kyn: httpx.AsyncClient, url: str, floor: str, bare: str,
               n: int) -> tuple[list[float], ...]:
    d, k, o, f, b = [], [], [], [], []
    for _ in range(n):  # interleaved, so all five see the same conditions
        d.append((await direct_stream(direct, url))[0] * 1000)
        cid = await new_conversation(kyn)  # before the clock starts
        k.append((await kynsey_stream(kyn, cid))[0] * 1000)
        o.append((await openai_stream(kyn, "standard"))[0] * 1000)
        f.append((await direct_stream(direct, floor))[0] * 1000)
        b.append((await direct_stream(direct, bare))[0] * 1000)
    return d, k, o, f, b


@contextlib.contextmanager
def floor_relay(backend: str, app: str = "app"):
    """bench/floor_relay.py's ``app`` (or ``bare``) served as Kynsey is served (uvloop, httptools) in its own
    process; yields its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", f"bench.floor_relay:{app}", "--port", str(port),
                             "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"],
                            cwd=ROOT, env={**os.environ, "FLOOR_BACKEND": backend})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(port)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_until_listening(port: int) -> None:
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


async def one_stream(direct, kyn, url: str, floor: str, bare: str, tier: str, runs: int) -> tuple[float, ...]:
    """tokens/s of one stream, from the request to its end: direct, through Kynsey's SSE, through /v1,
    through the floor, through the bare relay;
    the median of ``runs`` interleaved runs (one stream of 200 tokens lasts a few milliseconds).
    (From the first token on is no measure here: Kynsey coalesces what the fake sends at once.)"""
    (await kyn.post("/api/models/tier", json={"tier": tier})).raise_for_status()
    d, k, o, f, b = [], [], [], [], []
    for _ in range(runs):
        cid = await new_conversation(kyn)  # before the clock starts
        d.append(_rate(await direct_stream(direct, url)))
        k.append(_rate(await kynsey_stream(kyn, cid)))
        o.append(_rate(await openai_stream(kyn, tier)))
        f.append(_rate(await direct_stream(direct, floor)))
        b.append(_rate(await direct_stream(direct, bare)))
    return tuple(percentile(rates, 50) for rates in (d, k, o, f, b))


def _rate(stream: tuple[float, int, float]) -> float:
    """tokens/s from the request to the end of a stream's (ttft s, tokens, seconds after the first token)."""
    ttft_s, tokens, rest_s = stream
    return tokens / (ttft_s + rest_s)


async def user_turn(kyn: httpx.AsyncClient) -> tuple[float, int, float]:
    """A user's turn as it happens under load: create the conversation, then send."""
    return await kynsey_stream(kyn, await new_conversation(kyn))


@contextlib.asynccontextmanager
async def users(count: int, **client_args):
    """``count`` users, each with a client (and so connections) of their own, as browsers are: one
    shared httpx pool scans every connection for every request, and at 200 streams that scan, in the
    benchmark's own process, was what the figures measured."""
    clients = [httpx.AsyncClient(verify=SSL, timeout=HUNG_AFTER, **client_args) for _ in range(count)]
    try:
        yield clients
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


async def concurrent(make, clients: list[httpx.AsyncClient]) -> tuple[float, int, int, int]:
    """(tokens/s in all, tokens, errors, hung) for one stream per client, all at once."""
    started = time.perf_counter()
    results = await asyncio.gather(*(asyncio.wait_for(make(c), HUNG_AFTER) for c in clients), return_exceptions=True)
    elapsed = time.perf_counter() - started
    tokens = sum(r[1] for r in results if isinstance(r, tuple))
    hung = sum(1 for r in results if isinstance(r, TimeoutError))
    failures = [r for r in results if isinstance(r, BaseException) and not isinstance(r, TimeoutError)]
    for why in sorted({f"{type(r).__name__}: {r}"[:200] for r in failures})[:3]:
        print(f"  a stream failed: {why}", file=sys.stderr)
    return tokens / elapsed, tokens, len(failures), hung


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def mb(value: int) -> str:
    return f"{value / 2**20:.0f} MB"


async def run(args, urls: dict[str, str], floors: dict[str, str], bares: dict[str, str], kynsey: Kynsey, token: str,
              db: str) -> list[tuple[str, str]]:
    headers = {"Authorization": f"Bearer {token}"}
    rows: list[tuple[str, str]] = []
    async with httpx.AsyncClient(timeout=HUNG_AFTER) as direct, httpx.AsyncClient(
        base_url=kynsey.url, headers=headers, timeout=HUNG_AFTER
    ) as kyn:
        await ttft(direct, kyn, urls["standard"], floors["standard"], bares["standard"], 20)  # warm connections and caches
        d, k, o, f, b = await ttft(direct, kyn, urls["standard"], floors["standard"], bares["standard"],
                                   args.ttft_requests)
        rows.append((f"[{db}] TTFT direct p50 / p99", f"{percentile(d, 50):.2f} / {percentile(d, 99):.2f} ms  ({load()})"))
        floor50 = percentile(f, 50) - percentile(d, 50)
        for route, times in (("Kynsey SSE", k), ("/v1/chat/completions", o)):
            added50, added99 = percentile(times, 50) - percentile(d, 50), percentile(times, 99) - percentile(d, 99)
            rows += [
                (f"[{db}] TTFT via {route} p50 / p99", f"{percentile(times, 50):.2f} / {percentile(times, 99):.2f} ms"),
                (f"[{db}] TTFT added by {route} p50 / p99 (goal <= 2 / 5 ms)",
                 f"{added50:+.2f} / {added99:+.2f} ms; over the floor {added50 - floor50:+.2f} ms p50"),
            ]
        rows.append((f"[{db}] TTFT added by the floor (bench/floor_relay.py: FastAPI + aiohttp, nothing else) p50 / p99",
                     f"{floor50:+.2f} / {percentile(f, 99) - percentile(d, 99):+.2f} ms"))
        rows.append((f"[{db}] TTFT added by the same relay as a bare ASGI app (no FastAPI) p50 / p99",
                     f"{percentile(b, 50) - percentile(d, 50):+.2f} / {percentile(b, 99) - percentile(d, 99):+.2f} ms"))
        for tier, tokens in (("short", "200 tokens"), ("long", "2000 tokens"),
                             ("paced", f"200 tokens paced at {1 / PACED_DELAY:,.0f}/s")):
            d_rate, k_rate, o_rate, f_rate, b_rate = await one_stream(direct, kyn, urls[tier], floors[tier], bares[tier],
                                                                      tier, args.stream_runs)
            what = f"[{db}] one stream of {tokens}, request to end (median of {args.stream_runs})"
            rows += [(f"{what}: via Kynsey SSE / direct (goal >= 0.8x)",
                      f"{k_rate:,.0f} / {d_rate:,.0f} tokens/s = {k_rate / d_rate:.2f}x  ({load()})"),
                     (f"{what}: via /v1 / direct (goal >= 0.8x)",
                      f"{o_rate:,.0f} / {d_rate:,.0f} tokens/s = {o_rate / d_rate:.2f}x"),
                     (f"{what}: via the floor / direct", f"{f_rate:,.0f} / {d_rate:,.0f} tokens/s = {f_rate / d_rate:.2f}x"),
                     (f"{what}: via the bare relay / direct",
                      f"{b_rate:,.0f} / {d_rate:,.0f} tokens/s = {b_rate / d_rate:.2f}x")]
        (await kyn.post("/api/models/tier", json={"tier": "many"})).raise_for_status()
        rows += await rounds(args, urls["many"], kynsey, headers, db)
    return rows


async def rounds(args, url: str, kynsey: Kynsey, headers: dict, db: str) -> list[tuple[str, str]]:
    """Rounds of ``args.streams`` users streaming at once, each creating its conversation first."""
    rows: list[tuple[str, str]] = []
    proc = psutil.Process(kynsey.proc.pid)
    async with users(args.streams) as direct, users(args.streams, base_url=kynsey.url, headers=headers) as kyn:
        for round_no in range(1, args.rounds + 1):
            d_rate, *_ = await concurrent(lambda client: direct_stream(client, url), direct)
            cpu = proc.cpu_times()
            with PeakRss(kynsey.proc.pid) as peak:
                k_rate, tokens, errors, hung = await concurrent(user_turn, kyn)
            used = proc.cpu_times()
            cpu_us = ((used.user + used.system) - (cpu.user + cpu.system)) / max(tokens, 1) * 1e6
            await asyncio.sleep(1)
            rows += [
                (f"[{db}] round {round_no}: {args.streams} x {args.stream_tokens} (goal >= 0.8x, 0 errors, 0 hung)",
                 f"{k_rate:,.0f} / {d_rate:,.0f} tokens/s = {k_rate / d_rate:.2f}x; errors {errors}, hung {hung}  ({load()})"),
                (f"[{db}] round {round_no}: Kynsey CPU per relayed token (goal <= 10 us)", f"{cpu_us:.1f} us"),
                (f"[{db}] round {round_no}: Kynsey RSS peak / idle after", f"{mb(peak.peak)} / {mb(proc.memory_info().rss)}"),
            ]
        d_rate, *_ = await concurrent(lambda client: direct_stream(client, url), direct)
        cpu = proc.cpu_times()
        o_rate, tokens, errors, hung = await concurrent(lambda client: openai_stream(client, "many"), kyn)
        used = proc.cpu_times()
        cpu_us = ((used.user + used.system) - (cpu.user + cpu.system)) / max(tokens, 1) * 1e6
        rows += [(f"[{db}] /v1: {args.streams} x {args.stream_tokens} (goal >= 0.8x, 0 errors, 0 hung)",
                  f"{o_rate:,.0f} / {d_rate:,.0f} tokens/s = {o_rate / d_rate:.2f}x; errors {errors}, hung {hung}  ({load()})"),
                 (f"[{db}] /v1: Kynsey CPU per relayed token (goal <= 10 us)", f"{cpu_us:.1f} us")]
    return rows


def catalog_file(urls: dict[str, str]) -> str:
    """One tier per loopback server, each streaming a fixed number of tokens."""
    import tempfile

    text = f'default_tier = "standard"\n[plans.pro]\ngrants = {json.dumps(list(urls))}\n'
    for tier, url in urls.items():
        text += f'[backends.{tier}]\nkind = "ollama"\nhosts = ["{url}"]\n'
    for tier in urls:
        text += (f'[[tiers]]\ntier = "{tier}"\ndisplay_name = "{tier.title()}"\ninternal_name = "KYNSEY {tier}"\n'
                 f'model_id = "{MODEL}"\nbackend = "{tier}"\n')
    handle = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    handle.write(text)
    handle.close()
    return handle.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--ttft-requests", type=int, default=150)
    parser.add_argument("--stream-runs", type=int, default=15, help="runs of each one-stream measure (median)")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--stream-tokens", type=int, default=2000, help="tokens per concurrent stream")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent streams (memory must not grow)")
    args = parser.parse_args()
    replies = {"standard": ("20",), "short": ("200",), "long": ("2000",), "many": (str(args.stream_tokens),),
               "paced": ("200", "--token-delay", str(PACED_DELAY))}
    rows: list[tuple[str, str]] = [("machine", f"{os.cpu_count()} cores, {load()} before the run")]
    with contextlib.ExitStack() as stack:
        urls = {tier: stack.enter_context(fake_ollama("--models", MODEL, "--loaded", MODEL, "--reply-tokens", *reply))
                for tier, reply in replies.items()}
        relayed = ("standard", "short", "long", "paced")
        floors = {tier: stack.enter_context(floor_relay(urls[tier])) for tier in relayed}
        bares = {tier: stack.enter_context(floor_relay(urls[tier], "bare")) for tier in relayed}
        # Lift the limits, and keep the rollback guard from reading the benchmark's own load as a degradation.
        settings = dict(chat_rate_limit="100000000/minute", switch_rate_limit="100000/minute",
                        guard_min_replies="100000000", tiers=catalog_file(urls))
        for db in args.db.split(","):
            with kynsey_on(db, urls["standard"], settings) as (kynsey, token):
                rows += asyncio.run(run(args, urls, floors, bares, kynsey, token, db))
    report(rows)


@contextlib.contextmanager
def kynsey_on(db: str, ollama_url: str, settings: dict[str, str], **options) -> Iterator[tuple[Kynsey, str]]:
    """`kynsey serve` on ``db`` (sqlite: a file of its own; postgres: a private database), and a user's token."""
    with contextlib.ExitStack() as stack:
        if db == "postgres":
            settings = {**settings, "database_url": stack.enter_context(private_database("kynsey_bench"))}
        kynsey = stack.enter_context(Kynsey(ollama_url, **options, **settings))
        yield kynsey, kynsey.user_token("bench")


if __name__ == "__main__":
    main()
