"""N2: what Kynsey adds to chat, beside the same requests sent straight to the backend.

    python -m bench.chat_bench [--ttft-requests 300] [--tokens 20000] [--streams 200]

The loopback Ollama runs in its own process and streams tokens as fast as it
can; Kynsey runs as `kynsey serve` in another. Figures from one run:
time to first token (p50, p99, difference), tokens/s for one stream and for
many concurrent streams, and Kynsey's resident memory idle, at peak, and idle
again after each round of streams (it must not grow with finished streams).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time

import httpx
import psutil

from bench.common import MODELS, Kynsey, fake_ollama, percentile, report

MODEL = MODELS[0]


async def direct_stream(client: httpx.AsyncClient, url: str) -> tuple[float, int, float]:
    """(ttft s, tokens, seconds from first token to end) straight from the backend."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.perf_counter()
    first = None
    tokens = 0
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


async def kynsey_stream(client: httpx.AsyncClient, cid: str) -> tuple[float, int, float]:
    """(ttft s, tokens, seconds from first token to end) through Kynsey's SSE."""
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "hi"}) as resp:
        if resp.status_code != 200:
            raise SystemExit(f"chat answered {resp.status_code}: {await resp.aread()}")
        event = None
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[7:]
            elif line.startswith("data:") and event == "delta" and first is None:
                first = time.perf_counter()
            elif line.startswith("data:") and event == "done":
                tokens = json.loads(line[5:])["tokens"]
            elif line.startswith("data:") and event == "error":
                raise SystemExit(f"chat error: {line}")
    return first - started, tokens, time.perf_counter() - first


async def conversations(client: httpx.AsyncClient, count: int) -> list[str]:
    return [(await client.post("/api/conversations", json={})).json()["id"] for _ in range(count)]


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
    return f"{value / 2**20:.1f} MB"


async def ttft_round(direct, kyn, url, n: int) -> tuple[list[float], list[float]]:
    cids = await conversations(kyn, n)
    d, k = [], []
    for cid in cids:  # alternate so both see the same conditions
        d.append((await direct_stream(direct, url))[0] * 1000)
        k.append((await kynsey_stream(kyn, cid))[0] * 1000)
    return d, k


async def concurrent(fn, args_list) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(*(fn(*args) for args in args_list))
    return sum(r[1] for r in results) / (time.perf_counter() - started)


async def run(args, urls: dict[str, str], kynsey: Kynsey, token: str) -> list[tuple[str, str]]:
    ollama_short, ollama_long, ollama_medium = urls["standard"], urls["pro"], urls["code"]
    limits = httpx.Limits(max_connections=args.streams + 10, max_keepalive_connections=args.streams + 10)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=300, limits=limits) as direct, httpx.AsyncClient(
        base_url=kynsey.url, headers=headers, timeout=300, limits=limits
    ) as kyn:
        await ttft_round(direct, kyn, ollama_short, 20)  # warm up
        d_ttft, k_ttft = await ttft_round(direct, kyn, ollama_short, args.ttft_requests)
        rss = psutil.Process(kynsey.proc.pid)
        idle = rss.memory_info().rss
        # one long stream each way (the long server streams --tokens tokens)
        _, d_tok, d_s = await direct_stream(direct, ollama_long)
        await kyn.post("/api/models/tier", json={"tier": "pro"})
        [cid] = await conversations(kyn, 1)
        _, k_tok, k_s = await kynsey_stream(kyn, cid)
        rows = [
            ("TTFT direct p50 / p99", f"{percentile(d_ttft, 50):.2f} / {percentile(d_ttft, 99):.2f} ms"),
            ("TTFT via Kynsey p50 / p99", f"{percentile(k_ttft, 50):.2f} / {percentile(k_ttft, 99):.2f} ms"),
            ("TTFT added p50 / p99 (goal N2: < 2 ms at p50)",
             f"{percentile(k_ttft, 50) - percentile(d_ttft, 50):.2f} / {percentile(k_ttft, 99) - percentile(d_ttft, 99):.2f} ms"),
            (f"one stream of {d_tok} tokens: direct", f"{d_tok / d_s:,.0f} tokens/s"),
            (f"one stream of {k_tok} tokens: via Kynsey", f"{k_tok / k_s:,.0f} tokens/s ({k_tok / k_s / (d_tok / d_s):.0%} of direct)"),
            ("Kynsey RSS idle", mb(idle)),
        ]
        await kyn.post("/api/models/tier", json={"tier": "code"})
        for round_no in range(1, args.rounds + 1):
            cids = await conversations(kyn, args.streams)
            d_rate = await concurrent(direct_stream, [(direct, ollama_medium)] * args.streams)
            with PeakRss(kynsey.proc.pid) as peak:
                k_rate = await concurrent(kynsey_stream, [(kyn, c) for c in cids])
            await asyncio.sleep(1)
            rows += [
                (f"round {round_no}: {args.streams} concurrent streams, direct", f"{d_rate:,.0f} tokens/s in all"),
                (f"round {round_no}: {args.streams} concurrent streams, via Kynsey",
                 f"{k_rate:,.0f} tokens/s in all ({k_rate / d_rate:.0%} of direct)"),
                (f"round {round_no}: Kynsey RSS peak / idle after", f"{mb(peak.peak)} / {mb(rss.memory_info().rss)}"),
            ]
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ttft-requests", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=20000, help="tokens in a long stream")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--stream-tokens", type=int, default=2000, help="tokens per concurrent stream")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of concurrent streams (memory must not grow)")
    args = parser.parse_args()
    replies = {"standard": "20", "pro": str(args.tokens), "code": str(args.stream_tokens)}
    with contextlib.ExitStack() as stack:
        urls = {
            tier: stack.enter_context(fake_ollama("--models", MODEL, "--loaded", MODEL, "--reply-tokens", tokens))
            for tier, tokens in replies.items()
        }
        # Lift the limits, and keep the rollback guard from reading the benchmark's own load as a degradation.
        limits = dict(chat_rate_limit="100000000/minute", switch_rate_limit="100000/minute", guard_min_replies="100000000")
        with Kynsey(urls["standard"], tiers=catalog_file(urls), **limits) as kynsey:
            token = kynsey.user_token("bench")
            rows = asyncio.run(run(args, urls, kynsey, token))
    report(rows)


def catalog_file(urls: dict[str, str]) -> str:
    """One tier per loopback server: short replies, one long reply, medium replies."""
    import tempfile

    text = 'default_tier = "standard"\n[plans.pro]\ngrants = ["standard", "pro", "code"]\n'
    for tier, url in urls.items():
        text += f'[backends.{tier}]\nkind = "ollama"\nhosts = ["{url}"]\n'
    for tier in urls:
        text += (
            f'[[tiers]]\ntier = "{tier}"\ndisplay_name = "{tier.title()}"\ninternal_name = "KYNSEY {tier}"\n'
            f'model_id = "{MODEL}"\nbackend = "{tier}"\n'
        )
    handle = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    handle.write(text)
    handle.close()
    return handle.name


if __name__ == "__main__":
    main()
