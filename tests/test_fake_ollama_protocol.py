"""The fake Ollama speaks Ollama's documented API, checked with a plain httpx client."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.servers.fake_ollama import FakeOllama, parse_keep_alive

MINI = "llama3.2:3b-instruct-fp16"
PRO = "qwen2.5:14b-instruct"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake():
    with FakeOllama(loaded=[MINI]) as server:
        yield server


@pytest.fixture
def client(fake):
    with httpx.Client(base_url=fake.url, timeout=5) as c:
        yield c


def chat_lines(client: httpx.Client, body: dict) -> list[dict]:
    with client.stream("POST", "/api/chat", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in resp.iter_lines() if line]


def ask(model: str, text: str = "hello there", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_status_endpoints_have_the_documented_fields(client):
    assert client.get("/api/version").json() == {"version": "0.12.6"}
    tags = client.get("/api/tags").json()["models"]
    assert {m["name"] for m in tags} == {MINI, PRO, "qwen2.5-coder:7b-instruct"}
    for m in tags:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= m.keys()
        assert {"format", "family", "families", "parameter_size", "quantization_level"} <= m["details"].keys()
    running = client.get("/api/ps").json()["models"]
    assert [m["name"] for m in running] == [MINI]
    assert {"name", "model", "size", "digest", "details", "expires_at", "size_vram"} <= running[0].keys()


def test_a_name_without_tag_means_latest():
    with FakeOllama({"llama3.2": 100}) as fake, httpx.Client(base_url=fake.url) as client:
        assert [m["name"] for m in client.get("/api/tags").json()["models"]] == ["llama3.2:latest"]
        lines = chat_lines(client, ask("llama3.2"))
        assert lines[-1]["done"] is True
        assert "llama3.2:latest" in fake.loaded and fake.load_count["llama3.2"] == 1


def test_chat_streams_tokens_then_a_final_line_with_nanosecond_figures(client, fake):
    lines = chat_lines(client, ask(MINI, "hello there"))
    *tokens, final = lines
    assert "".join(t["message"]["content"] for t in tokens) == "Echo: hello there"
    assert all(t["done"] is False and t["message"]["role"] == "assistant" for t in tokens)
    assert final["done"] is True and final["done_reason"] == "stop"
    assert final["eval_count"] == len(tokens) == 3
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int), key
    assert fake.load_count[MINI] == 0  # it was already in memory


def test_chat_without_streaming_answers_one_object(client):
    answer = client.post("/api/chat", json=ask(MINI, "one two", stream=False)).json()
    assert answer["message"] == {"role": "assistant", "content": "Echo: one two"}
    assert answer["done"] is True and answer["eval_count"] == 3


def test_reply_and_reply_tokens_replace_the_echo(client, fake):
    fake.reply = "fixed words here"
    assert client.post("/api/chat", json=ask(MINI, stream=False)).json()["message"]["content"] == "fixed words here"
    fake.reply_tokens = 50
    *tokens, final = chat_lines(client, ask(MINI))
    assert len(tokens) == final["eval_count"] == 50


def test_a_cold_chat_loads_first_and_reports_the_load(client, fake):
    fake.load_delay = 0.02
    final = chat_lines(client, ask(PRO))[-1]
    assert final["load_duration"] == 20_000_000
    assert fake.load_count[PRO] == 1 and PRO in fake.loaded
    assert chat_lines(client, ask(PRO))[-1]["load_duration"] == 0
    assert fake.load_count[PRO] == 1


def test_a_different_num_ctx_reloads_the_model(client, fake):
    chat_lines(client, ask(PRO, options={"num_ctx": 8192}))
    chat_lines(client, ask(PRO, options={"num_ctx": 8192}))
    assert fake.load_count[PRO] == 1
    chat_lines(client, ask(PRO, options={"num_ctx": 2048}))
    assert fake.load_count[PRO] == 2 and fake.loaded[PRO].num_ctx == 2048


def test_preload_and_unload_through_generate(client, fake):
    answer = client.post("/api/generate", json={"model": PRO, "keep_alive": "30m", "options": {"num_ctx": 8192}}).json()
    assert answer["done"] is True and answer["done_reason"] == "load" and answer["response"] == ""
    ps = {m["name"]: m for m in client.get("/api/ps").json()["models"]}
    expires = datetime.fromisoformat(ps[PRO]["expires_at"])
    now = datetime.now().astimezone()
    assert now + timedelta(minutes=29) < expires < now + timedelta(minutes=31)
    assert fake.requests[-2] == ("/api/generate", {"model": PRO, "keep_alive": "30m", "options": {"num_ctx": 8192}})
    answer = client.post("/api/generate", json={"model": PRO, "keep_alive": 0}).json()
    assert answer["done_reason"] == "unload"
    assert PRO not in fake.loaded and PRO not in {m["name"] for m in client.get("/api/ps").json()["models"]}


def test_keep_alive_forever_and_bad_durations(client):
    client.post("/api/generate", json={"model": PRO, "keep_alive": -1})
    ps = {m["name"]: m for m in client.get("/api/ps").json()["models"]}
    assert datetime.fromisoformat(ps[PRO]["expires_at"]).year > 2200
    resp = client.post("/api/generate", json={"model": PRO, "keep_alive": "soon"})
    assert resp.status_code == 400 and "invalid duration" in resp.json()["error"]


def test_parse_keep_alive_reads_ollama_durations():
    assert parse_keep_alive("5m") == 300
    assert parse_keep_alive("1h30m") == 5400
    assert parse_keep_alive("1.5s") == 1.5
    assert parse_keep_alive(90) == 90
    assert parse_keep_alive("120") == 120
    assert parse_keep_alive("-1") is None and parse_keep_alive(-5) is None
    assert parse_keep_alive(None) == 300
    with pytest.raises(ValueError):
        parse_keep_alive("5 minutes")


def test_missing_models_are_404_with_an_error(client):
    resp = client.post("/api/chat", json=ask("nope:1b"))
    assert resp.status_code == 404 and resp.json() == {"error": "model 'nope:1b' not found"}
    assert client.post("/api/show", json={"model": "nope:1b"}).status_code == 404
    shown = client.post("/api/show", json={"model": PRO}).json()
    assert {"details", "modelfile", "parameters", "template", "capabilities"} <= shown.keys()


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [
        ("missing", 404, f"model '{PRO}' not found"),
        ("busy", 503, "server busy, please try again.  maximum pending requests exceeded"),
        ("load_fail", 500, "llama runner process has terminated: exit status 2"),
    ],
)
def test_injected_failures_answer_with_ollama_errors(client, fake, mode, status, error):
    fake.fail[PRO] = mode
    for resp in (client.post("/api/chat", json=ask(PRO)), client.post("/api/generate", json={"model": PRO})):
        assert resp.status_code == status and resp.json() == {"error": error}
    assert fake.load_count[PRO] == 0


def test_stream_error_sends_tokens_then_an_error_line(client, fake):
    fake.fail[MINI] = "stream_error"
    lines = chat_lines(client, ask(MINI, "a b c d e"))
    assert [line.get("message", {}).get("content") for line in lines[:-1]] == ["Echo:", " a"]
    assert set(lines[-1]) == {"error"}


def test_disconnect_drops_the_connection_mid_stream(client, fake):
    fake.fail[MINI] = "disconnect"
    seen = []
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", "/api/chat", json=ask(MINI, "a b c d e")) as resp:
            seen.extend(resp.iter_lines())
    assert len([line for line in seen if line]) == 2


def test_truncate_ends_the_stream_without_its_done_line(client, fake):
    fake.fail[MINI] = "truncate"
    lines = chat_lines(client, ask(MINI, "a b c d e"))
    assert [line["done"] for line in lines] == [False, False]
    assert client.post("/api/generate", json={"model": MINI}).content == b'{"model":'


def test_hang_never_answers(client, fake):
    fake.fail[MINI] = "hang"
    with pytest.raises(httpx.ReadTimeout):
        client.post("/api/chat", json=ask(MINI), timeout=0.3)


def test_fail_ratio_fails_an_exact_share_of_requests(client, fake):
    fake.fail_ratio = (0.25, "busy")
    statuses = [client.post("/api/chat", json=ask(MINI, stream=False)).status_code for _ in range(8)]
    assert statuses == [200, 200, 200, 503, 200, 200, 200, 503]
    fake.fail_ratio = None
    assert client.post("/api/chat", json=ask(MINI, stream=False)).status_code == 200


def test_evict_drops_a_model_from_memory(client, fake):
    fake.evict(MINI)
    assert client.get("/api/ps").json()["models"] == []
    chat_lines(client, ask(MINI))
    assert fake.load_count[MINI] == 1


def test_stop_refuses_connections_and_start_listens_on_the_same_port(fake):
    url = fake.url
    fake.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/api/version")
    fake.start()
    assert fake.url == url
    assert httpx.get(url + "/api/version").json()["version"] == "0.12.6"


def test_stop_ends_a_hanging_request(fake):
    fake.fail[MINI] = "hang"
    with httpx.Client(base_url=fake.url, timeout=10) as client:
        threading.Timer(0.2, fake.stop).start()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post("/api/chat", json=ask(MINI))


def test_command_line_serves_a_fixed_number_of_tokens():
    cmd = [sys.executable, "-m", "tests.servers.fake_ollama", "--port", "0", "--reply-tokens", "7", "--models", "a,b", "--loaded", "a"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=5) as client:
            assert [m["name"] for m in client.get("/api/ps").json()["models"]] == ["a:latest"]
            *tokens, final = chat_lines(client, ask("a"))
            assert len(tokens) == final["eval_count"] == 7
    finally:
        proc.terminate()
        proc.wait(10)
