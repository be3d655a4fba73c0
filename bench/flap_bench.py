"""N3: switch success while the backend flaps (the plan's 99.9%).

    python -m bench.flap_bench [--switches 10000] [--phase-seconds 6] [--users 8]

Kynsey runs as `kynsey serve` in its own process; the loopback Ollama runs in
this one so the benchmark can flap it: phases of healthy, down (the server is
stopped), healthy, busy (every load and chat answers 503), healthy, 30% of loads
and chats failing, healthy, slow loads (longer than the switch's warm wait),
and again. Models are evicted at random throughout, so switches keep warming.
Users switch between tiers at random, and chat now and then (chats feed the
circuits). Reported from one run:

- success of the switches sent once the backend had been healthy for one
  status refresh interval (goal: >= 99.9%); success is 200 (ready, unchanged)
  or 202 (warming: the switch is stored, the load goes on);
- switches answered 'ready' while the backend was known down (down for a
  refresh interval or more; goal: 0);
- answers with a 5xx other than the designed 503/502 (goal: 0 500s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass

import httpx

from bench.common import MODELS, Kynsey, report
from tests.servers.fake_ollama import FakeOllama

TIERS = ["standard", "pro", "code"]
PHASES = ["healthy", "down", "healthy", "busy", "healthy", "flaky", "healthy", "slow"]
REFRESH = 1.0  # the status refresh interval Kynsey runs with here


@dataclass
class Sample:
    phase: str
    healthy_for: float | None  # seconds the backend had been healthy when the switch was sent
    down_for: float | None  # seconds it had been down
    code: int
    status: str | None


class Flapper:
    def __init__(self, fake: FakeOllama, phase_seconds: float) -> None:
        self.fake, self.phase_seconds = fake, phase_seconds
        self.phase, self.since = "healthy", time.monotonic()

    def enter(self, phase: str) -> None:
        fake = self.fake
        if self.phase == "down":
            fake.start()
        fake.fail_ratio, fake.load_delay = None, 0.0
        if phase == "down":
            fake.stop()
        elif phase == "busy":
            fake.fail_ratio = (1.0, "busy")
        elif phase == "flaky":
            fake.fail_ratio = (0.3, "load_fail")
        elif phase == "slow":
            fake.load_delay = 3.0
        self.phase, self.since = phase, time.monotonic()

    def mark(self) -> tuple[str, float | None, float | None]:
        age = time.monotonic() - self.since
        return self.phase, age if self.phase == "healthy" else None, age if self.phase == "down" else None

    async def run(self, stop: asyncio.Event) -> None:
        i = 0
        while not stop.is_set():
            await asyncio.sleep(self.phase_seconds)
            i += 1
            await asyncio.to_thread(self.enter, PHASES[i % len(PHASES)])

    async def evict(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(0.7)
            if self.phase != "down":
                self.fake.evict(random.choice(MODELS))


async def user(client: httpx.AsyncClient, flap: Flapper, samples: list[Sample], budget: list[int], cid: str) -> None:
    active = "standard"
    while budget[0] > 0:
        budget[0] -= 1
        target = random.choice([t for t in TIERS if t != active])
        phase, healthy_for, down_for = flap.mark()
        resp = await client.post("/api/models/tier", json={"tier": target})
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        samples.append(Sample(phase, healthy_for, down_for, resp.status_code, body.get("status")))
        if resp.status_code in (200, 202):
            active = target
        if random.random() < 0.1:  # a chat now and then: failures feed the circuits
            async with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "hi"}) as chat:
                await chat.aread()
        await asyncio.sleep(0.005)


async def drive(kynsey: Kynsey, tokens: list[str], flap: Flapper, switches: int) -> list[Sample]:
    samples: list[Sample] = []
    budget, stop = [switches], asyncio.Event()
    clients = [httpx.AsyncClient(base_url=kynsey.url, headers={"Authorization": f"Bearer {t}"}, timeout=60) for t in tokens]
    try:
        cids = [(await c.post("/api/conversations", json={})).json()["id"] for c in clients]
        background = [asyncio.create_task(flap.run(stop)), asyncio.create_task(flap.evict(stop))]
        await asyncio.gather(*(user(c, flap, samples, budget, cid) for c, cid in zip(clients, cids, strict=True)))
        stop.set()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return samples


def summarise(samples: list[Sample]) -> list[tuple[str, str]]:
    ok = lambda s: s.code in (200, 202)  # noqa: E731
    settled = [s for s in samples if s.healthy_for is not None and s.healthy_for >= REFRESH]
    known_down = [s for s in samples if s.down_for is not None and s.down_for >= REFRESH]
    ready_down = sum(1 for s in known_down if s.code == 200 and s.status == "ready")
    by_phase = Counter(s.phase for s in samples)
    rows = [
        ("switches in all", f"{len(samples)} ({', '.join(f'{p} {n}' for p, n in sorted(by_phase.items()))})"),
        ("answers by status", ", ".join(f"{c}: {n}" for c, n in sorted(Counter(s.code for s in samples).items()))),
        (f"success once healthy for >= {REFRESH:g} s (goal >= 99.9%)",
         f"{sum(map(ok, settled)) / len(settled):.3%} of {len(settled)}" if settled else "no such switches"),
        ("  failures among them", ", ".join(f"{c} {st}: {n}" for (c, st), n in
                                            Counter((s.code, s.status) for s in settled if not ok(s)).items()) or "none"),
        ("success in the first refresh interval after recovery",
         _share(ok, [s for s in samples if s.healthy_for is not None and s.healthy_for < REFRESH])),
        (f"'ready' while known down (>= {REFRESH:g} s; goal 0)", f"{ready_down} of {len(known_down)}"),
        ("'ready' in the first interval after a stop (not yet known)",
         str(sum(1 for s in samples if s.down_for is not None and s.down_for < REFRESH and s.status == "ready"))),
        ("500 answers (goal 0)", str(sum(1 for s in samples if s.code == 500))),
    ]
    return rows


def _share(predicate, items) -> str:
    return f"{sum(map(predicate, items)) / len(items):.1%} of {len(items)}" if items else "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--switches", type=int, default=10000)
    parser.add_argument("--phase-seconds", type=float, default=6.0)
    parser.add_argument("--users", type=int, default=8)
    args = parser.parse_args()
    with FakeOllama(models={m: 1_000_000_000 for m in MODELS}, loaded=MODELS) as fake:
        fake.record_requests = False
        settings = dict(switch_rate_limit="100000000/minute", chat_rate_limit="100000000/minute",
                        status_refresh=str(REFRESH), guard_min_switches="100000000", guard_min_replies="100000000")
        with Kynsey(fake.url, **settings) as kynsey:
            tokens = [kynsey.user_token(f"user{i}") for i in range(args.users)]
            flap = Flapper(fake, args.phase_seconds)
            started = time.monotonic()
            samples = asyncio.run(drive(kynsey, tokens, flap, args.switches))
            elapsed = time.monotonic() - started
            fake.start()
    load = os.getloadavg()[0]
    report([("run", f"{elapsed:.0f} s, {args.users} users, phases of {args.phase_seconds:g} s, load average {load:.2f}"),
            *summarise(samples)])


if __name__ == "__main__":
    main()
