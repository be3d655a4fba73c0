"""Redis dies or freezes under running instances (SPEC F8, N6; issue: hardening).

Policy (kynsey/ratelimit.py): rate limits fail open to each instance's memory,
bounded by ``KYNSEY_REDIS_TIMEOUT`` per call, logged once and counted in
/metrics; /readyz reports Redis without taking the instance out of service.
These tests use a throwaway ``redis-server`` on its own port, never the shared one.
"""

from __future__ import annotations

import os
import signal

import pytest
import redis

from tests.live import metric
from tests.sse import collect


def test_every_redis_key_starts_with_the_configured_prefix(start_server, fake_ollama, throwaway_redis):
    _, url = throwaway_redis
    server = start_server(ollama_host=fake_ollama.url, redis_url=url, redis_prefix="acme-kynsey")
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    cid = client.post("/api/conversations", json={}).json()["id"]
    collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})
    keys = [k.decode() for k in redis.Redis.from_url(url).keys("*")]
    assert keys and all(k.startswith("acme-kynsey:") for k in keys), keys


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_limits_fail_open_to_memory_when_redis_dies_or_freezes(start_server, fake_ollama, throwaway_redis, fault):
    proc, url = throwaway_redis
    # No background status refresh: under load a probe past its 0.5 s would make the tier unavailable (503).
    server = start_server(ollama_host=fake_ollama.url, redis_url=url, switch_rate_limit="4/minute",
                          redis_timeout=0.2, redis_retry_seconds=60, status_refresh=600)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"), timeout=10)
    first = client.post("/api/models/tier", json={"tier": "pro"})
    assert first.status_code == 200, first.text  # counted in Redis
    assert client.get("/readyz").json()["checks"]["redis"] == {"ok": True}

    if fault == "killed":
        proc.kill()
        proc.wait(10)
    else:
        os.kill(proc.pid, signal.SIGSTOP)
    # Switches and chats go on: the limit is counted in this instance's memory now.
    codes = [client.post("/api/models/tier", json={"tier": t}).status_code for t in ("code", "pro", "code", "pro", "code")]
    assert codes == [200, 200, 200, 200, 429], codes  # the in-memory window holds the limit on its own
    cid = client.post("/api/conversations", json={}).json()["id"]
    assert collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})[-1][0] == "done"

    ready = client.get("/readyz")
    assert ready.status_code == 200  # fail open: the instance keeps serving
    assert ready.json()["checks"]["redis"]["ok"] is False and "redis" in ready.json()["down"]
    assert metric(server, "kynsey_redis_errors_total") >= 1
    assert metric(server, "kynsey_ratelimit_fallback") == 1


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_logins_and_password_changes_go_on_guarded_in_memory_when_redis_fails(start_server, fake_ollama,
                                                                            throwaway_redis, fault):
    """The failed-login limit counts in this instance's memory while Redis fails: a right password still
    logs in and changes, and wrong ones are still refused past the limit (5/minute per account)."""
    proc, url = throwaway_redis
    server = start_server(ollama_host=fake_ollama.url, redis_url=url, redis_timeout=0.2, redis_retry_seconds=60)
    server.add_user("ann", "standard", password="correct horse battery")
    if fault == "killed":
        proc.kill()
        proc.wait(10)
    else:
        os.kill(proc.pid, signal.SIGSTOP)

    def login(password: str):
        client = server.client(timeout=10)
        return client, client.post("/api/auth/login", json={"name": "ann", "password": password})

    page, resp = login("correct horse battery")
    assert resp.status_code == 200, resp.text
    csrf = {"X-CSRF-Token": page.get("/api/auth/me").json()["csrf_token"]}
    resp = page.put("/api/auth/password", headers=csrf,
                    json={"current_password": "correct horse battery", "password": "a brand new secret"})
    assert resp.status_code == 200, resp.text
    assert login("correct horse battery")[1].status_code == 401  # 1 failure counted
    codes = [page.put("/api/auth/password", headers=csrf, json={"current_password": f"guess {n}", "password": "x" * 12}
                      ).status_code for n in range(5)]
    assert codes == [403] * 4 + [429], codes  # failures 2-5, then the limit holds in memory
    assert login("a brand new secret")[1].status_code == 429  # ... for logins to the account too
    assert metric(server, "kynsey_ratelimit_fallback") == 1
