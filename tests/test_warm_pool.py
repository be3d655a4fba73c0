"""The warm pool keeps keep_warm tiers loaded, re-warming them when Ollama evicts them (SPEC N1)."""

from __future__ import annotations

from tests.live import eventually
from tests.servers.fake_ollama import FakeOllama

STANDARD = "llama3.2:3b-instruct-fp16"



def test_keep_warm_tiers_load_at_start_and_come_back_after_eviction(start_server):
    with FakeOllama(models={STANDARD: 1, "qwen2.5:14b-instruct": 1, "qwen2.5-coder:7b-instruct": 1}) as fake:
        start_server(ollama_host=fake.url)
        eventually(lambda: STANDARD in fake.loaded, "Standard preloaded at start")
        preload = next(b for p, b in fake.requests if p == "/api/generate" and b.get("model") == STANDARD)
        assert preload["options"]["num_ctx"] == 4096 and preload["keep_alive"] == "30m"
        assert "qwen2.5:14b-instruct" not in fake.loaded  # Pro is not keep_warm
        fake.evict(STANDARD)
        eventually(lambda: STANDARD in fake.loaded, "Standard re-warmed after eviction")
        assert fake.load_count[STANDARD] == 2
