"""N1: how fast a switch to a ready tier answers, beside GET /healthz on the same server.

    python -m bench.switch_bench [--switches 2000]

Both Kynsey and the loopback Ollama run as their own processes; all three
tiers are loaded, so no switch waits for a load; the rate limit is lifted.
Requests alternate (switch, healthz) so both see the same conditions.
"""

from __future__ import annotations

import argparse
import os
import time

import httpx

from bench.common import MODELS, Kynsey, fake_ollama, percentile, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--switches", type=int, default=2000)
    args = parser.parse_args()
    loaded = ",".join(MODELS)
    with fake_ollama("--models", loaded, "--loaded", loaded) as ollama_url:
        with Kynsey(ollama_url, switch_rate_limit="100000000/minute", status_refresh="5") as kynsey:
            token = kynsey.user_token("bench")
            with httpx.Client(base_url=kynsey.url, headers={"Authorization": f"Bearer {token}"}) as client:
                switch_ms, health_ms = run(client, args.switches)
    p = {name: (percentile(v, 50), percentile(v, 99)) for name, v in (("switch", switch_ms), ("healthz", health_ms))}
    report(
        [
            ("machine", f"{os.cpu_count()} cores"),
            ("switches to a ready tier", f"{len(switch_ms)}"),
            ("POST /api/models/tier p50 / p99", f"{p['switch'][0]:.2f} ms / {p['switch'][1]:.2f} ms"),
            ("GET /healthz p50 / p99", f"{p['healthz'][0]:.2f} ms / {p['healthz'][1]:.2f} ms"),
            ("ratio switch/healthz p50 / p99", f"{p['switch'][0] / p['healthz'][0]:.1f}x / {p['switch'][1] / p['healthz'][1]:.1f}x"),
            ("goal N1: switch p99 < 20 ms", "met" if p["switch"][1] < 20 else "NOT met"),
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


if __name__ == "__main__":
    main()
