"""F12: how often the rollback guard trips falsely under a noisy but healthy load.

    python -m bench.guard_bench [--minutes 5] [--burst 15] [--every 45]

Two `kynsey serve` processes run side by side against one healthy loopback
Ollama (its own process, a steady ``--ttft`` to the first token, 5 ms: a small model): one judges with
no hold (``KYNSEY_GUARD_SUSTAIN_SECONDS=0``, the guard as it was), one with the
default hold. Each gets a steady stream of chats. Meanwhile CPU noise comes in
bursts (two busy processes per core for ``--burst`` s every ``--every`` s),
then, for the last fifth of the run, without a pause. Nothing is broken, so
every trip is a false one. After a trip the flag is turned back on (as an
admin would), which starts a new baseline. Reported: trips per instance, with
the load average beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.common import MODELS, Kynsey, fake_ollama, report

MODEL = MODELS[0]


def burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def noise(seconds: float) -> None:
    procs = [multiprocessing.Process(target=burn, args=(seconds,)) for _ in range(2 * (os.cpu_count() or 2))]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


async def chats(client: httpx.AsyncClient, stop: asyncio.Event) -> int:
    count = 0
    while not stop.is_set():
        cid = (await client.post("/api/conversations", json={})).json()["id"]
        async with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "hi"}) as resp:
            await resp.aread()
        count += 1
        await asyncio.sleep(0.05)
    return count


def rollbacks(client: httpx.Client) -> int:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "kynsey_rollbacks_total" and sample.labels.get("trigger") == "ttft":
                return int(sample.value)
    return 0


async def rearm(admin: httpx.Client, seen: list[int], rises: list[float], stop: asyncio.Event) -> None:
    """Turn the flag back on after each trip, as an admin would; note the window's median rise."""
    while not stop.is_set():
        await asyncio.sleep(1)
        ttft = (await asyncio.to_thread(admin.get, "/api/admin/dashboard")).json()["guard"]["ttft"]
        if ttft.get("degradation") is not None:
            rises.append(ttft["degradation"])
        trips = await asyncio.to_thread(rollbacks, admin)
        if trips > seen[0]:
            seen[0] = trips
            await asyncio.to_thread(admin.put, "/api/admin/flags/model_switching", json={"state": "on"})


async def scenario(instances: dict[str, tuple[Kynsey, str, str]], minutes: float, burst: float, every: float) -> dict:
    stop = asyncio.Event()
    seen = {name: [0] for name in instances}
    rises: dict[str, list[float]] = {name: [] for name in instances}
    users = {name: httpx.AsyncClient(base_url=k.url, headers={"Authorization": f"Bearer {tok}"}, timeout=120)
             for name, (k, tok, _) in instances.items()}
    admins = {name: httpx.Client(base_url=k.url, headers={"Authorization": f"Bearer {adm}"}, timeout=30)
              for name, (k, _, adm) in instances.items()}
    tasks = [asyncio.create_task(chats(users[n], stop)) for n in instances]
    tasks += [asyncio.create_task(rearm(admins[n], seen[n], rises[n], stop)) for n in instances]
    await asyncio.sleep(20)  # a quiet start: the baselines form
    end = time.monotonic() + minutes * 60
    sustained_from = end - minutes * 60 / 5
    while time.monotonic() < sustained_from:
        await asyncio.to_thread(noise, burst)
        await asyncio.sleep(max(0.0, every - burst))
    await asyncio.to_thread(noise, max(0.0, end - time.monotonic()))
    await asyncio.sleep(3)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    result = {name: {"trips": rollbacks(admins[name]), "chats": tasks[i].result(),
                     "rise": max(rises[name], default=0.0), "breached": sum(r > 0.2 for r in rises[name])}
              for i, name in enumerate(instances)}
    for client in users.values():
        await client.aclose()
    for client in admins.values():
        client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--burst", type=float, default=15, help="seconds of CPU noise per burst")
    parser.add_argument("--every", type=float, default=45, help="seconds from one burst to the next")
    parser.add_argument("--ttft", type=float, default=0.005, help="the backend's time to first token, seconds")
    parser.add_argument("--window", type=float, default=300, help="the guard's window (KYNSEY_GUARD_WINDOW_SECONDS)")
    args = parser.parse_args()
    common = dict(chat_rate_limit="100000000/minute", status_refresh="5", guard_window_seconds=str(args.window))
    with fake_ollama("--models", MODEL, "--loaded", MODEL, "--reply-tokens", "20", "--first-token-delay", str(args.ttft)) as url:
        with Kynsey(url, guard_sustain_seconds="0", **common) as old, Kynsey(url, **common) as new:
            instances = {}
            for name, k in (("no hold (as before)", old), ("default hold", new)):
                instances[name] = (k, k.user_token("user", "pro"), k.user_token("root", "pro", admin=True))
            started = time.monotonic()
            result = asyncio.run(scenario(instances, args.minutes, args.burst, args.every))
    load = os.getloadavg()[0]
    rows = [("run", f"{(time.monotonic() - started) / 60:.1f} min, window {args.window:g} s: bursts of {args.burst:g} s every {args.every:g} s, "
                    f"then sustained noise for the last fifth; load average at the end {load:.2f}")]
    for name, figures in result.items():
        rows.append((f"{name}: false trips", f"{figures['trips']} over {figures['chats']} healthy replies; "
                     f"largest median rise {figures['rise']:.0%}, over 20% in {figures['breached']} of the 1 s samples"))
    report(rows)


if __name__ == "__main__":
    main()
