"""A real model answering through the OpenAI-compatible API: SmolLM2 on the in-process `local` backend (SPEC F16, F17)."""

from __future__ import annotations

from pathlib import Path

import openai

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "local-tiers.toml"


def test_smollm2_answers_through_v1_chat_completions(start_server, tmp_path):
    catalog = tmp_path / "tiers.toml"
    catalog.write_text(EXAMPLE.read_text().replace("temperature = 0.2 }", "temperature = 0.0, num_predict = 24 }"))
    server = start_server(tiers=catalog)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.add_user("alice", "standard"), max_retries=0,
                        timeout=120)
    assert [m.id for m in sdk.models.list()] == ["standard", "fast"]

    done = sdk.chat.completions.create(model="fast", messages=[{"role": "user", "content": "Name a colour."}],
                                       max_tokens=12, seed=1)
    assert done.model == "fast" and done.choices[0].message.content.strip()
    assert 0 < done.usage.completion_tokens <= 12 and done.usage.prompt_tokens > 0
    assert done.model_extra["kynsey"]["model"] == "SmolLM2-135M-Instruct.Q4_1"

    chunks = list(sdk.chat.completions.create(model="standard", messages=[{"role": "user", "content": "Say hi."}],
                                              stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage.completion_tokens > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    metrics = server.client().get("/metrics").text
    assert 'kynsey_replies_total{model="smollm2",status="complete",tier="standard"} 1.0' in metrics


BAD_OPTIONS = [{"temperature": "hot"}, {"top_k": 1.5}, {"stop": 5}, {"seed": "x"}, {"num_predict": "many"},
               {"seed": 2**40}, {"temperature": -1}, {"top_p": 2}, {"stop": ["."] * 17}]


def test_ollama_options_a_model_cannot_take_are_refused_before_it_and_pause_nothing(start_server):
    """Passed on as they came, each of these failed inside llama.cpp (the reply: "'<' not supported
    between instances of 'str' and 'float'"), and from the third the model's circuit was open: one
    client's bad options paused the tier for everyone. Runner options stay accepted and ignored."""
    server = start_server(tiers=EXAMPLE)
    client = server.client(server.add_user("alice", "standard"))

    def chat(options: dict):
        return client.post("/api/chat", json={"model": "standard", "messages": [{"role": "user", "content": "hi"}],
                                              "stream": False, "options": options})

    for options in BAD_OPTIONS:
        resp = chat(options)
        assert resp.status_code == 400 and resp.json()["error"].startswith("invalid request: options."), (options, resp.text)
    nan = client.post("/api/chat", content=b'{"model": "standard", "messages": [], "options": {"temperature": NaN}}',
                      headers={"content-type": "application/json"})
    assert nan.status_code == 400, nan.text
    resp = chat({"num_predict": 4, "stop": "\n", "seed": 2**32 - 1, "num_ctx": 99, "num_thread": "any"})
    assert resp.status_code == 200 and resp.json()["done"] is True, resp.text
