"""Shared pieces of the benchmarks: real processes on loopback, percentiles."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct", "qwen2.5-coder:7b-instruct"]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def fake_ollama(*args: str):
    """The loopback Ollama server in its own process; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.fake_ollama", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


class Kynsey:
    """`kynsey serve` as a real process with its own SQLite database."""

    def __init__(self, ollama_url: str, *, server: tuple[str, ...] = ("-m", "kynsey.cli"), root: Path = ROOT,
                 **settings: str) -> None:
        self.server = server  # what `python` runs, with `serve --port N` after it
        self.root = root  # the checkout whose code it serves (`python -m` imports from its folder)
        self.dir = tempfile.TemporaryDirectory(prefix="kynsey-bench-")
        self.env = {
            **os.environ,
            "KYNSEY_DATA_DIR": self.dir.name,
            "OLLAMA_HOST": ollama_url,
            "KYNSEY_LOG_LEVEL": os.environ.get("KYNSEY_LOG_LEVEL", "INFO"),  # as users run it
            # The built-in catalog's `local` tier would answer (SmolLM2) when the loopback Ollama fails.
            "KYNSEY_TIERS": str(ROOT / "tests" / "catalogs" / "ollama-tiers.toml"),
            **{f"KYNSEY_{k.upper()}": v for k, v in settings.items()},
        }
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "kynsey.cli", *args], env=self.env, capture_output=True, text=True, check=True,
            stdin=subprocess.DEVNULL,
        )
        return done.stdout.strip()

    def __enter__(self) -> Kynsey:
        self.cli("db", "upgrade")
        self.proc = subprocess.Popen(
            [sys.executable, *self.server, "serve", "--port", str(self.port)], env=self.env, cwd=self.root
        )
        for _ in range(400):
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("kynsey serve did not become ready")

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.dir.cleanup()

    def user_token(self, name: str, plan: str = "pro", *, admin: bool = False) -> str:
        self.cli("user", "add", name, "--plan", plan, *(["--admin"] if admin else []))
        return self.cli("user", "token", name)


def report(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


async def kynsey_stream(client: httpx.AsyncClient, cid: str) -> tuple[float, int, float]:
    """(ttft s, tokens, seconds from first token to end) through Kynsey's SSE; raises on any error."""
    started = time.perf_counter()
    first, tokens, event = None, 0, None
    async with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": "hi"}) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"chat answered {resp.status_code}: {(await resp.aread())[:200]!r}")
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                event = line[7:]
            elif line.startswith("data:") and event == "delta" and first is None:
                first = time.perf_counter()
            elif line.startswith("data:") and event == "done":
                tokens = json.loads(line[5:])["tokens"]
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(f"chat error: {line[5:200]}")
    if first is None or not tokens:
        raise RuntimeError("the stream ended without a reply")
    return first - started, tokens, time.perf_counter() - first
