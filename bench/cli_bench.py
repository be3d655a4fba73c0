"""N7: how long each `kynsey` command takes, start to exit, as an operator runs it.

    python -m bench.cli_bench [--runs 10]

Each command runs as its own process (the installed `kynsey` script) against the
SQLite database of a running Kynsey; `kynsey tiers` asks a running Kynsey
(with the loopback Ollama) as it does after `./bin/serve`. Beside them, the
floor: a bare `python -c pass` from the same interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import MODELS, Kynsey, fake_ollama, percentile, report

GOAL_S = 0.5
KYNSEY = Path(sys.executable).with_name("kynsey")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``command``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {proc.stderr.read().decode()}")
    proc.stderr.close()
    return elapsed, usage.ru_utime + usage.ru_stime


def measure(runs: int, env: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    for i in range(20):  # a few users to list
        subprocess.run(
            [str(KYNSEY), "user", "add", f"seed{i}", "--plan", "standard", "--no-password"],
            env=env,
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
    subprocess.run([str(KYNSEY), "user", "token", "seed0"], env=env, check=True, capture_output=True)
    commands = {
        "python -c pass (floor)": lambda i: [sys.executable, "-c", "pass"],
        "kynsey settings": lambda i: [str(KYNSEY), "settings"],
        "kynsey user list": lambda i: [str(KYNSEY), "user", "list"],
        "kynsey user add": lambda i: [str(KYNSEY), "user", "add", f"bench{i}", "--plan", "pro", "--no-password"],
        "kynsey user plan": lambda i: [str(KYNSEY), "user", "plan", f"bench{i}", "standard"],
        "kynsey token list": lambda i: [str(KYNSEY), "token", "list", "seed0"],
        "kynsey flag model_switching": lambda i: [str(KYNSEY), "flag", "model_switching"],
        "kynsey audit verify": lambda i: [str(KYNSEY), "audit", "verify"],
        "kynsey tiers (asks the server)": lambda i: [str(KYNSEY), "tiers"],
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for i in range(runs):  # round-robin, so every command sees the same background load
        for name, make in commands.items():
            times[name].append(timed(make(i), env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if not KYNSEY.exists():
        raise SystemExit(f"no kynsey script next to {sys.executable}: run through bin/bench")
    loaded = ",".join(MODELS)
    with fake_ollama("--models", loaded, "--loaded", loaded) as ollama_url:
        with Kynsey(ollama_url) as server:  # the CLI shares its database, as on an operator's machine
            times = measure(args.runs, {**server.env, "KYNSEY_URL": server.url})
    rows = [
        ("machine", f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (other work slows every figure)"),
        ("runs per command", str(args.runs)),
    ]
    slowest = 0.0
    for name, pairs in times.items():
        wall, cpu = [w for w, _ in pairs], [c for _, c in pairs]
        median = statistics.median(wall)
        if not name.startswith("python"):
            slowest = max(slowest, median)
        rows.append(
            (
                name,
                f"wall median {median * 1000:.0f} ms, p90 {percentile(wall, 90) * 1000:.0f} ms; "
                f"CPU median {statistics.median(cpu) * 1000:.0f} ms",
            )
        )
    rows.append(
        (f"goal N7: every command < {GOAL_S} s (median)", "met" if slowest < GOAL_S else f"NOT met ({slowest:.2f} s)")
    )
    report(rows)


if __name__ == "__main__":
    main()
