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
