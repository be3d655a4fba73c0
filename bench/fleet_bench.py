"""Issue 12 item 7: model loads and TTFT on a fleet of Ollama hosts, health-order routing beside holder routing.

    python -m bench.fleet_bench [--requests 1000] [--users 8] [--load-delay 0.2] [--seed 12]

Each host is the loopback Ollama (tests/servers/fake_ollama.py) in its own
process, holding one model at a time (``--capacity 1``: loading another evicts
the least recently used and costs ``--load-delay``); it counts its loads
(``GET /fake/loads``). One backend serves three tiers from those hosts;
`kynsey serve` runs in its own process. Simulated users, each with a client of
their own, switch tier at random (half their turns) and chat, concurrently.
One run measures four scenarios, each on fresh hosts and a fresh Kynsey:

- steady state, three hosts, ``routing = "health_order"`` (Kynsey before issue
  12) and ``routing = "holder"``: after a warm-up of ``--requests / 5`` turns,
  model loads per 1,000 requests and TTFT p50/p99 over ``--requests`` turns;
- a host's loss: the same on four hosts (three models, one spare), one host
  holding a model killed (SIGKILL) halfway through: the loads that follow.
  With three hosts of one model each there is nowhere to put the lost model
  without evicting another one, and every routing then reloads forever.

Goal: 0 loads per 1,000 requests in steady state by holder routing (hundreds by
health order), and one reload per model a lost host held. The 1-minute load
average is printed beside each scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import MODELS, ROOT, Kynsey, kynsey_stream, percentile, report

TIERS = dict(zip(("standard", "pro", "code"), MODELS, strict=True))
HUNG_AFTER = 60.0


@dataclass
class Scenario:
    name: str
    routing: str
    hosts: int
    kill: bool = False


@dataclass
class Result:
    scenario: Scenario
    requests: int = 0
    errors: int = 0
    loads: int = 0
    ttft_ms: list[float] = field(default_factory=list)
    loss_loads: int | None = None
    lost_models: list[str] = field(default_factory=list)
    load_avg: float = 0.0


@contextmanager
def host(args) -> tuple[subprocess.Popen, str]:
    """One loopback Ollama host in its own process; yields (process, URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.fake_ollama", "--models", ",".join(MODELS), "--capacity", "1",
         "--load-delay", str(args.load_delay), "--reply-tokens", str(args.reply_tokens)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        yield proc, proc.stdout.readline().strip()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def catalog(urls: list[str], routing: str, folder: str) -> str:
    path = Path(folder) / "fleet-tiers.toml"
    tiers = "".join(
        f'\n[[tiers]]\ntier = "{slug}"\ndisplay_name = "{slug}"\ninternal_name = "{slug}"\nmodel_id = "{model}"\n'
        'keep_alive = "30m"\n'
        for slug, model in TIERS.items()
    )
    path.write_text(
        'default_tier = "standard"\n[backends.ollama]\nkind = "ollama"\n'
        f"hosts = {json.dumps(urls)}\nrouting = \"{routing}\"\n"
        f'[plans.pro]\ngrants = {json.dumps(list(TIERS))}\n{tiers}'
    )
    return str(path)


def loads_on(urls: list[str]) -> dict[str, tuple[int, list[str]]]:
    """Each answering host: (its loads so far, what it holds)."""
    seen = {}
    for url in urls:
        try:
            body = httpx.get(f"{url}/fake/loads", timeout=2).json()
        except httpx.TransportError:
            continue
        seen[url] = (body["total"], body["loaded"])
    return seen


def total(seen: dict[str, tuple[int, list[str]]]) -> int:
    return sum(loads for loads, _ in seen.values())


async def turn(client: httpx.AsyncClient, rng: random.Random, ttft: list[float]) -> None:
    """One user's turn: sometimes a switch to a random tier, then a chat in a new conversation."""
    if rng.random() < 0.5:
        resp = await client.post("/api/models/tier", json={"tier": rng.choice(list(TIERS))})
        if resp.status_code not in (200, 202):
            raise RuntimeError(f"switch answered {resp.status_code}: {resp.text[:200]}")
    resp = await client.post("/api/conversations", json={})
    if resp.status_code != 201:
        raise RuntimeError(f"new conversation answered {resp.status_code}: {resp.text[:200]}")
    ttft_s, _, _ = await kynsey_stream(client, resp.json()["id"])
    ttft.append(ttft_s * 1000)


async def traffic(clients: list[httpx.AsyncClient], count: int, rng: random.Random, ttft: list[float]) -> int:
    """``count`` turns spread over the users, all users at once; returns the errors."""
    left, errors = [count], [0]

    async def user(client: httpx.AsyncClient, seed: int) -> None:
        mine = random.Random(seed)
        while left[0] > 0:
            left[0] -= 1
            try:
                await asyncio.wait_for(turn(client, mine, ttft), HUNG_AFTER)
            except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
                errors[0] += 1
                if errors[0] <= 3:
                    print(f"  a turn failed: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)

    await asyncio.gather(*(user(c, rng.random()) for c in clients))
    return errors[0]


def run(scenario: Scenario, args) -> Result:
    result = Result(scenario)
    rng = random.Random(args.seed)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="kynsey-fleet-") as folder:
        hosts = [stack.enter_context(host(args)) for _ in range(scenario.hosts)]
        urls = [url for _, url in hosts]
        kynsey = stack.enter_context(Kynsey(
            urls[0], tiers=catalog(urls, scenario.routing, folder), switch_rate_limit="100000000/minute",
            chat_rate_limit="100000000/minute", warm_rate_limit="100000000/minute", status_refresh="1",
        ))
        tokens = [kynsey.user_token(f"user{i}") for i in range(args.users)]

        async def work() -> None:
            clients = [httpx.AsyncClient(base_url=kynsey.url, timeout=HUNG_AFTER,
                                         headers={"Authorization": f"Bearer {t}"}) for t in tokens]
            try:
                await traffic(clients, max(args.requests // 5, len(clients)), rng, [])  # warm-up: not measured
                before = total(loads_on(urls))
                if not scenario.kill:
                    result.errors = await traffic(clients, args.requests, rng, result.ttft_ms)
                    result.loads = total(loads_on(urls)) - before
                    return
                result.errors = await traffic(clients, args.requests // 2, rng, result.ttft_ms)
                at_kill = loads_on(urls)
                victim = next(i for i, url in enumerate(urls) if at_kill[url][1])
                result.lost_models = at_kill[urls[victim]][1]
                hosts[victim][0].send_signal(signal.SIGKILL)
                result.errors += await traffic(clients, args.requests - args.requests // 2, rng, result.ttft_ms)
                survivors = loads_on([u for i, u in enumerate(urls) if i != victim])
                result.loss_loads = total(survivors) - sum(at_kill[u][0] for u in survivors)
                result.loads = total(at_kill) - before + result.loss_loads
            finally:
                await asyncio.gather(*(c.aclose() for c in clients))

        asyncio.run(work())
        result.requests = len(result.ttft_ms) + result.errors
        result.load_avg = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="measured chat turns per scenario")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--load-delay", type=float, default=0.2, help="seconds a host takes to load a model")
    parser.add_argument("--reply-tokens", type=int, default=20)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    scenarios = [
        Scenario("3 hosts, health order (before)", "health_order", 3),
        Scenario("3 hosts, holder routing", "holder", 3),
        Scenario("4 hosts, health order, one killed", "health_order", 4, kill=True),
        Scenario("4 hosts, holder routing, one killed", "holder", 4, kill=True),
    ]
    rows = [("machine", f"{os.cpu_count()} cores; hosts hold 1 model each, a load takes {args.load_delay * 1000:.0f} ms;"
                        f" {args.users} users, half their turns switch tier")]
    results = []
    for scenario in scenarios:
        r = run(scenario, args)
        results.append(r)
        per_k = r.loads * 1000 / max(r.requests, 1)
        p50, p99 = (percentile(r.ttft_ms, 50), percentile(r.ttft_ms, 99)) if r.ttft_ms else (float("nan"),) * 2
        figure = (f"{per_k:6.1f} loads per 1,000 requests ({r.loads} in {r.requests}, {r.errors} errors); "
                  f"TTFT p50 {p50:.1f} ms, p99 {p99:.1f} ms; load {r.load_avg:.2f}")
        if r.loss_loads is not None:
            figure += f"; after the kill: {r.loss_loads} load(s), the lost host held {', '.join(r.lost_models)}"
        rows.append((scenario.name, figure))
        print(f"{scenario.name}: {figure}", file=sys.stderr, flush=True)
    holder, loss = results[1], results[3]
    rows.append(("goal: 0 loads per 1,000 in steady state (holder)", "met" if holder.loads == 0 else "NOT met"))
    rows.append(("goal: a lost host costs one reload per model it held",
                 "met" if loss.loss_loads == len(loss.lost_models) else "NOT met"))
    report(rows)


if __name__ == "__main__":
    main()
