"""N2 (memory flat across finished streams): Kynsey's Python heap after each round of streams.

    python -m bench.memory_bench [--db sqlite,postgres] [--rounds 6] [--streams 200] [--stream-tokens 2000]

The chat benchmark reads Kynsey's RSS after each round, which also moves with
the C allocator (glibc keeps freed pages in its arenas, and returns them in
steps), so a rise of a few MB there says little. This one runs `kynsey serve`
under ``tracemalloc`` (``bench/traced_serve.py``), with the loopback Ollama in a
process of its own, and after each round of ``--streams`` users (each creating a
conversation and streaming a reply of ``--stream-tokens``), once every finished
reply has left memory (``LINGER_SECONDS``), prints the traced heap (what Python
objects hold) and the count of live objects. The first round fills caches and pools; from the
second on, the heap must stay flat. Where it grew most from the first dump
to the last is printed too, and which types of object grew most in number. Tracing slows Kynsey down: no speed here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from bench.chat_bench import MODEL, catalog_file, concurrent, kynsey_on, load, user_turn, users
from bench.common import Kynsey, fake_ollama, report
from kynsey.chat.live import LINGER_SECONDS


def mb(value: float) -> str:
    return f"{value / 2**20:.1f} MB"


def dump(kynsey: Kynsey, out: Path, count: int) -> dict:
    """Ask the traced server for its heap; the line it appends (the ``count``-th)."""
    assert kynsey.proc is not None
    kynsey.proc.send_signal(signal.SIGUSR1)
    for _ in range(600):  # a snapshot of a large heap takes a second or two
        lines = out.read_text().splitlines() if out.exists() else []
        if len(lines) >= count:
            return json.loads(lines[count - 1])
        time.sleep(0.05)
    raise RuntimeError("the traced server wrote no heap figures")


async def run(args, kynsey: Kynsey, token: str, out: Path, db: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    heaps: list[dict] = []
    async with users(args.streams, base_url=kynsey.url, headers={"Authorization": f"Bearer {token}"}) as clients:
        (await clients[0].post("/api/models/tier", json={"tier": "many"})).raise_for_status()
        for round_no in range(1, args.rounds + 1):
            _, tokens, errors, hung = await concurrent(user_turn, clients)
            await asyncio.sleep(LINGER_SECONDS + 1)  # every finished reply has left memory
            heap = dump(kynsey, out, round_no)
            heaps.append(heap)
            rows.append((f"[{db}] round {round_no}: {args.streams} x {args.stream_tokens}, then idle: "
                         "Python heap / objects",
                         f"{mb(heap['heap'])} / {heap['objects']:,}; "
                         f"{tokens:,} tokens, errors {errors}, hung {hung}  ({load()})"))
    first, last = heaps[0], heaps[-1]
    rows.append((f"[{db}] heap from round 1 to round {args.rounds} (goal: flat)",
                 f"{(last['heap'] - first['heap']) / 2**20:+.2f} MB, {last['objects'] - first['objects']:+,} objects"))
    rows += [(f"[{db}]   grew most", place) for place in last["grew"][:5]]
    rows += [(f"[{db}]   live objects grew most", kind) for kind in last["types"][:5]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--stream-tokens", type=int, default=2000)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = [("machine", f"{os.cpu_count()} cores, {load()} before the run")]
    with fake_ollama("--models", MODEL, "--loaded", MODEL, "--reply-tokens", str(args.stream_tokens)) as url:
        settings = dict(chat_rate_limit="100000000/minute", guard_min_replies="100000000",
                        tiers=catalog_file({"standard": url, "many": url}))
        for db in args.db.split(","):
            with tempfile.TemporaryDirectory(prefix="kynsey-heap-") as heaps:
                out = Path(heaps) / "heap.jsonl"
                with kynsey_on(db, url, settings, server=("-m", "bench.traced_serve", str(out))) as (kynsey, token):
                    rows += asyncio.run(run(args, kynsey, token, out, db))
    report(rows)


if __name__ == "__main__":
    main()
