"""N2: Kynsey's time to first token at another revision beside this working tree's, in one run.

    python -m bench.ab_bench REV [--db postgres] [--requests 600]

A change worth a few tenths of a millisecond is lost in the noise between two
runs of the chat benchmark on a shared machine. This runs both versions at once:
`kynsey serve` from a checkout of ``REV`` (a git worktree, removed afterwards)
and from this working tree, each on a database of its own, beside the loopback
Ollama in its own process. Requests go in turn, in alternating order, to the
backend direct and to each version, every Kynsey request in a fresh conversation
created before the clock starts, so all three see the same conditions. It
prints the time each version adds over direct (p50, p90, p99) and the load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench import common
from bench.chat_bench import MODEL, catalog_file, direct_stream, kynsey_on, load, new_conversation
from bench.common import fake_ollama, kynsey_stream, percentile, report

WARM = 30  # requests of each kind not counted: connections, caches, prepared statements


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """A worktree of ``rev``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="kynsey-ab-") as parent:
        tree = Path(parent) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=common.ROOT, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=common.ROOT, check=False)


async def run(url: str, servers: dict[str, tuple[common.Kynsey, str]], requests: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"direct": [], **{name: [] for name in servers}}
    async with contextlib.AsyncExitStack() as stack:
        direct = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
        clients = {name: await stack.enter_async_context(httpx.AsyncClient(
            base_url=kynsey.url, headers={"Authorization": f"Bearer {token}"}, timeout=60))
            for name, (kynsey, token) in servers.items()}
        for n in range(requests + WARM):
            times["direct"].append((await direct_stream(direct, url))[0] * 1000)
            for name, client in (clients.items() if n % 2 else reversed(clients.items())):
                cid = await new_conversation(client)  # before the clock starts
                times[name].append((await kynsey_stream(client, cid))[0] * 1000)
    return {name: values[WARM:] for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rev", help="the revision to compare with the working tree, e.g. HEAD~1")
    parser.add_argument("--db", default="postgres", choices=("sqlite", "postgres"))
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()
    rows = [("machine", f"{os.cpu_count()} cores, {load()} before the run")]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fake_ollama("--models", MODEL, "--loaded", MODEL, "--reply-tokens", "20"))
        settings = dict(chat_rate_limit="100000000/minute", guard_min_replies="100000000",
                        tiers=catalog_file({"standard": url}))
        servers = {}
        for name, root in ((args.rev, stack.enter_context(checkout(args.rev))), ("working tree", common.ROOT)):
            servers[name] = stack.enter_context(kynsey_on(args.db, url, settings, root=root))
        times = asyncio.run(run(url, servers, args.requests))
    direct = times.pop("direct")
    rows.append((f"[{args.db}] TTFT direct p50 / p90 / p99",
                 " / ".join(f"{percentile(direct, p):.2f}" for p in (50, 90, 99)) + f" ms  ({load()})"))
    for name, values in times.items():
        added = [percentile(values, p) - percentile(direct, p) for p in (50, 90, 99)]
        rows.append((f"[{args.db}] TTFT added by {name} p50 / p90 / p99 ({args.requests} requests)",
                     " / ".join(f"{a:+.2f}" for a in added) + " ms"))
    report(rows)


if __name__ == "__main__":
    main()
