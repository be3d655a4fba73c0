"""A real OpenAI-compatible peer: llama-cpp-python's own server with SmolLM2 (SPEC F2; hardening item 16).

That server, by default, cuts a running stream when another request arrives,
ending it with ``data: [DONE]`` and no ``finish_reason``. Kynsey's status probe
(``GET /v1/models``) is such a request. Wanted: Kynsey does not probe a host
while it streams from it, so its own replies are whole; and a stream cut by
someone else's request is saved ``interrupted``, never ``complete``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from kynsey.backends.local_models import packaged_models
from tests.live import free_port
from tests.sse import events, text_of
from tests.test_chat import new_conversation

PROMPT = "List the numbers from 1 to 300, one per line."
CATALOG = """
default_tier = "standard"
[backends.llamacpp]
kind = "openai"
hosts = ["{url}"]
[plans.standard]
grants = ["standard"]
[[tiers]]
tier = "standard"
display_name = "Standard"
internal_name = "KYNSEY Mini"
model_id = "smollm2"
backend = "llamacpp"
options = {{ temperature = 0, max_tokens = 120 }}
"""



@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    model = next(m.path for m in packaged_models() if "smollm2" in m.aliases)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def kynsey(start_server, llama_server, tmp_path):
    path = tmp_path / "tiers.toml"
    path.write_text(CATALOG.format(url=llama_server))
    server = start_server(tiers=path, status_refresh=0.1, status_timeout=2.0)
    server.refresh_status()
    return server


def test_replies_through_kynsey_are_whole_although_it_refreshes_status_every_100_ms(kynsey):
    client = kynsey.client(kynsey.add_user("sam", "standard"), timeout=120)
    for _ in range(3):  # each reply lasts about a second: ten status refreshes
        cid = new_conversation(client)
        with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": PROMPT}) as resp:
            evts = list(events(resp))
        assert evts[-1][0] == "done", evts[-1]
        assert evts[-1][1]["tokens"] >= 20 and text_of(evts).strip()
        statuses = [m["status"] for m in client.get(f"/api/conversations/{cid}").json()["messages"]]
        assert statuses == ["complete", "complete"]
    tiers = client.get("/api/models/tiers").json()["tiers"]
    assert tiers[0]["status"] == "ready"  # it was never taken for unreachable meanwhile


def test_a_stream_cut_by_another_clients_request_is_interrupted_not_complete(kynsey, llama_server):
    client = kynsey.client(kynsey.add_user("sam", "standard"), timeout=120)
    cid = new_conversation(client)
    seen, other = [], None
    with client.stream("POST", f"/api/conversations/{cid}/messages", json={"content": PROMPT}) as resp:
        for event in events(resp):
            seen.append(event)
            if len(seen) == 4 and other is None:  # someone else asks the server for something
                other = threading.Thread(target=httpx.get, args=(f"{llama_server}/v1/models",), kwargs={"timeout": 60})
                other.start()
    other.join(60)
    assert seen[-1][0] == "error" and seen[-1][1]["code"] == "stream_broken", seen[-1]
    reply = client.get(f"/api/conversations/{cid}").json()["messages"][-1]
    assert reply["status"] == "interrupted" and reply["content"] == text_of(seen)
