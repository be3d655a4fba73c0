"""N1: how fast a switch to a ready tier answers, beside GET /healthz on the same server.

    python -m bench.switch_bench [--switches 2000] [--users 40] [--each 25]

Both Kynsey and the loopback Ollama run as their own processes, on the default
SQLite; all three tiers are loaded, so no switch waits for a load; the rate
limit is lifted. One user's requests alternate (switch, healthz) so both see the
same conditions. Then ``--users`` users switch ``--each`` times at once, each
with a connection of their own, beside the same users asking GET /healthz at
once: every switch is audited, and audit entries are written one at a time
(``kynsey/audit/log.py``), so this is where they queue.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx

from bench.common import MODELS, Kynsey, fake_ollama, percentile, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--switches", type=int, default=2000)
    parser.add_argument("--users", type=int, default=40, help="users switching at once")
    parser.add_argument("--each", type=int, default=25, help="switches per user, at once")
    args = parser.parse_args()
    loaded = ",".join(MODELS)
    with fake_ollama("--models", loaded, "--loaded", loaded) as ollama_url:
        with Kynsey(ollama_url, switch_rate_limit="100000000/minute", status_refresh="5") as kynsey:
            token = kynsey.user_token("bench")
            with httpx.Client(base_url=kynsey.url, headers={"Authorization": f"Bearer {token}"}) as client:
                switch_ms, health_ms = run(client, args.switches)
            tokens = [kynsey.user_token(f"bench{n}") for n in range(args.users)]
            together = asyncio.run(at_once(kynsey.url, tokens, args.each))
    p = {name: (percentile(v, 50), percentile(v, 99)) for name, v in (("switch", switch_ms), ("healthz", health_ms))}
    report(
        [
            ("machine", f"{os.cpu_count()} cores"),
            ("switches to a ready tier", f"{len(switch_ms)}"),
            ("POST /api/models/tier p50 / p99", f"{p['switch'][0]:.2f} ms / {p['switch'][1]:.2f} ms"),
            ("GET /healthz p50 / p99", f"{p['healthz'][0]:.2f} ms / {p['healthz'][1]:.2f} ms"),
            ("ratio switch/healthz p50 / p99", f"{p['switch'][0] / p['healthz'][0]:.1f}x / {p['switch'][1] / p['healthz'][1]:.1f}x"),
            ("goal N1: switch p99 < 20 ms", "met" if p["switch"][1] < 20 else "NOT met"),
            *together,
        ]
    )


def run(client: httpx.Client, count: int) -> tuple[list[float], list[float]]:
    tiers = ["pro", "code"]
    for i in range(50):  # warm connections, caches and the first status probe
        client.post("/api/models/tier", json={"tier": tiers[i % 2]}).raise_for_status()
        client.get("/healthz").raise_for_status()
    switch_ms, health_ms = [], []
    for i in range(count):
        started = time.perf_counter()
        resp = client.post("/api/models/tier", json={"tier": tiers[i % 2]})
        switch_ms.append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200 or resp.json()["status"] != "ready":
            raise SystemExit(f"switch {i} answered {resp.status_code}: {resp.text}")
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        health_ms.append((time.perf_counter() - started) * 1000)
    return switch_ms, health_ms


async def at_once(url: str, tokens: list[str], each: int) -> list[tuple[str, str]]:
    """Every user switches ``each`` times at once; then every user asks GET /healthz ``each`` times at once."""
    tiers = ["pro", "code", "standard"]
    rows = []
    for what, send in (("POST /api/models/tier", lambda c, i: c.post("/api/models/tier", json={"tier": tiers[i % 3]})),
                       ("GET /healthz", lambda c, i: c.get("/healthz"))):
        clients = [httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {t}"}, timeout=120) for t in tokens]
        try:
            started = time.perf_counter()
            times = [t for ts in await asyncio.gather(*(one_user(c, send, each, what) for c in clients)) for t in ts]
            elapsed = time.perf_counter() - started
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        rows.append((f"{len(tokens)} users x {each} at once: {what} p50 / p99, per second",
                     f"{percentile(times, 50):.1f} ms / {percentile(times, 99):.1f} ms, {len(times) / elapsed:,.0f}/s"
                     f"  (load {os.getloadavg()[0]:.2f})"))
    return rows


async def one_user(client: httpx.AsyncClient, send, each: int, what: str) -> list[float]:
    """ms of each of one user's ``each`` requests, one after another."""
    times = []
    for i in range(each):
        started = time.perf_counter()
        resp = await send(client, i)
        times.append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"{what} answered {resp.status_code} under load: {resp.text[:200]}")
    return times


if __name__ == "__main__":
    main()
