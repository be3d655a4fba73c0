"""The operators' API: dashboard data, readiness (SPEC F11, F12)."""

from __future__ import annotations

import socket

from tests.sse import collect

STANDARD = "llama3.2:3b-instruct-fp16"
FLAG_URL = "/api/admin/flags/model_switching"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_dashboard_shows_switches_error_rate_ttft_flag_and_the_last_rollback(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, guard_min_switches=3, guard_sustain_seconds=0)
    server.refresh_status()
    admin = server.client(server.add_user("root", "pro", admin=True))
    alice = server.client(server.add_user("alice", "pro"))
    sam = server.client(server.add_user("sam", "standard"))
    cid = alice.post("/api/conversations", json={"title": "t"}).json()["id"]
    collect(alice, "POST", f"/api/conversations/{cid}/messages", json={"content": "hello"})
    assert sam.post("/api/models/tier", json={"tier": "pro"}).status_code == 403  # not an attempt for the guard

    before = admin.get("/api/admin/dashboard").json()
    assert before["killed"] is False and before["last_rollback"] is None and before["flag"]["state"] == "on"
    assert before["error_rate_limit"] == 0.01 and before["guard"]["state"] == "armed"

    assert alice.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    assert alice.post("/api/models/tier", json={"tier": "standard"}).status_code == 200
    fake_ollama.fail["qwen2.5-coder:7b-instruct"] = "load_fail"
    assert alice.post("/api/models/tier", json={"tier": "code"}).status_code == 502  # 1 of 3: the guard trips
    server.call(lambda rt: rt.guard.aclose())

    data = admin.get("/api/admin/dashboard").json()
    assert len(data["minutes"]) == 60 and data["minutes"] == sorted(data["minutes"])
    counts = {result: sum(values) for result, values in data["switches"].items()}
    assert counts == {"ready": 2, "failed": 1, "denied": 1}
    failed_total = 0.0
    for i, rate in enumerate(data["error_rate"]):
        valid = data["switches"]["ready"][i] + data["switches"]["failed"][i]
        assert (rate is None) == (valid == 0)
        failed_total += (rate or 0) * valid
    assert round(failed_total, 3) == 1
    assert next(v for v in data["ttft_ms"][STANDARD] if v is not None) > 0

    assert data["killed"] is True and data["flag"]["state"] == "off"
    assert data["last_rollback"]["trigger"] == "switch_errors"
    assert "1 of 3 switch attempts failed" in data["last_rollback"]["reason"]
    assert data["guard"]["state"] == "tripped" and data["guard"]["last_rollback"]["users_reverted"] == 1

    admin.put(FLAG_URL, json={"state": "on"})
    after = admin.get("/api/admin/dashboard").json()
    assert after["killed"] is False and after["last_rollback"] == data["last_rollback"]
    assert after["guard"]["state"] == "armed" and after["guard"]["switches"]["attempts"] == 0


def test_operations_routes_are_for_admins_only(server):
    user = server.client(server.add_user("alice", "pro"))
    anon = server.client()
    for path in ("/api/admin/dashboard", FLAG_URL, "/api/admin/audit/export", "/api/admin/audit/verify"):
        assert anon.get(path).status_code == 401, path
        resp = user.get(path)
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden", path
    assert user.put(FLAG_URL, json={"state": "off"}).status_code == 403


def test_readyz_names_the_database_when_it_is_unreachable(start_server, fake_ollama):
    server = start_server(
        ollama_host=fake_ollama.url, database_url=f"postgresql+asyncpg://kynsey@127.0.0.1:{closed_port()}/kynsey"
    )
    server.refresh_status()
    client = server.client()
    assert client.get("/healthz").json() == {"status": "ok"}
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["ready"] is False and body["down"] == ["database"]
    assert body["checks"]["database"]["ok"] is False and body["checks"]["database"]["error"]
    assert body["checks"]["backend:ollama"]["ok"] is True
    assert client.get("/metrics").status_code == 200  # metrics still scrape with the database down


def test_readyz_is_ready_with_database_and_backend_up(server):
    resp = server.client().get("/readyz")
    assert resp.status_code == 200 and resp.json()["down"] == []


def test_the_dashboard_script_is_served(server):
    client = server.client()
    resp = client.get("/dashboard.js")
    assert resp.status_code == 200 and "javascript" in resp.headers["content-type"]
    assert 'from "./api.js"' in resp.text and 'setFlag("model_switching"' in resp.text  # the page's one API client
    api = client.get("/api.js").text
    assert "/api/admin/dashboard" in api and "/api/admin/flags/" in api
