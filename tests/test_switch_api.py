"""The tier endpoints over real HTTP against a loopback Ollama (SPEC F3, F4, F9)."""

from __future__ import annotations

from sqlalchemy import select

from kynsey.storage.models import AuditEntry

STANDARD, PRO, CODE = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct", "qwen2.5-coder:7b-instruct"


def audit_rows(server) -> list[AuditEntry]:
    """The switch entries (creating users and tokens is audited too)."""

    async def work(rt):
        async with rt.sessions() as db:
            return list(await db.scalars(select(AuditEntry).where(AuditEntry.action == "switch").order_by(AuditEntry.id)))

    return server.call(work)


def test_tiers_lists_the_catalog_with_live_status_and_permissions(server):
    token = server.add_user("alice", "pro")
    body = server.client(token).get("/api/models/tiers").json()
    assert body["active"] == "standard" and body["plan"] == "pro"
    tiers = {t["tier"]: t for t in body["tiers"]}
    assert list(tiers) == ["standard", "pro", "code"]
    assert tiers["standard"] | {} == tiers["standard"]
    assert (tiers["standard"]["display_name"], tiers["standard"]["internal_name"], tiers["standard"]["model_id"]) == (
        "Standard",
        "KYNSEY Mini",
        STANDARD,
    )
    assert [tiers[t]["status"] for t in tiers] == ["ready", "cold", "cold"]
    assert all(t["allowed"] and t["upgrade"] is None for t in tiers.values())
    assert [t["active"] for t in tiers.values()] == [True, False, False]


def test_locked_tiers_carry_the_upgrade_prompt(server):
    token = server.add_user("sam", "standard")
    tiers = {t["tier"]: t for t in server.client(token).get("/api/models/tiers").json()["tiers"]}
    assert tiers["standard"]["allowed"]
    for slug in ("pro", "code"):
        assert not tiers[slug]["allowed"]
        assert tiers[slug]["upgrade"]["unlock_plans"] == ["pro"]
        assert "Pro plan" in tiers[slug]["upgrade"]["message"]


def test_switch_to_a_cold_tier_preloads_with_chat_options_and_is_stored(server, fake_ollama):
    token = server.add_user("alice", "pro")
    client = server.client(token)
    resp = client.post("/api/models/tier", json={"tier": "code"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["tier"], body["previous"], body["status"], body["model_id"]) == ("code", "standard", "ready", CODE)
    assert body["switch_ms"] > 0 and body["load_ms"] is not None
    assert resp.headers["RateLimit-Limit"] == "10" and resp.headers["RateLimit-Remaining"] == "9"
    preloads = [b for path, b in fake_ollama.requests if path == "/api/generate" and b.get("model") == CODE]
    assert preloads and preloads[-1]["options"]["num_ctx"] == 8192 and preloads[-1]["keep_alive"] == "30m"
    assert client.get("/api/models/tiers").json()["active"] == "code"
    rows = audit_rows(server)
    assert [(r.action, r.subject, r.from_tier, r.to_tier, r.result) for r in rows] == [
        ("switch", "alice", "standard", "code", "ready")
    ]
    assert rows[0].request_id == resp.headers["x-request-id"] and rows[0].latency_ms > 0


def test_switch_to_the_active_tier_is_a_no_op_success(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    before = len(fake_ollama.requests)
    resp = client.post("/api/models/tier", json={"tier": "standard"})
    assert resp.status_code == 200 and resp.json()["status"] == "unchanged"
    assert [p for p, _ in fake_ollama.requests[before:] if p == "/api/generate"] == []
    assert audit_rows(server)[-1].result == "unchanged"


def test_standard_plan_asking_for_pro_gets_403_naming_the_plan(server):
    client = server.client(server.add_user("sam", "standard"))
    resp = client.post("/api/models/tier", json={"tier": "pro"})
    assert resp.status_code == 403
    error = resp.json()["error"]
    assert error["code"] == "tier_locked" and error["unlock_plans"] == ["pro"] and "Pro" in error["message"]
    assert client.get("/api/models/tiers").json()["active"] == "standard"
    assert audit_rows(server)[-1].result == "denied"


def test_the_eleventh_switch_in_a_minute_is_rate_limited(server):
    client = server.client(server.add_user("alice", "pro"))
    for i in range(10):
        resp = client.post("/api/models/tier", json={"tier": ["pro", "standard"][i % 2]})
        assert resp.status_code == 200, resp.text
    resp = client.post("/api/models/tier", json={"tier": "code"})
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1 and resp.headers["RateLimit-Remaining"] == "0"
    assert resp.json()["error"]["code"] == "rate_limited" and resp.json()["error"]["retry_after"] >= 1
    assert client.get("/api/models/tiers").json()["active"] == "standard"
    assert [r.result for r in audit_rows(server)][-1] == "rate_limited"


def test_missing_model_is_409_and_backend_down_is_503(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    del fake_ollama.models[PRO]
    server.refresh_status()
    resp = client.post("/api/models/tier", json={"tier": "pro"})
    assert resp.status_code == 409, resp.text
    assert resp.json()["error"]["tier_status"] == "missing"
    fake_ollama.stop()
    server.refresh_status()
    resp = client.post("/api/models/tier", json={"tier": "code"})
    assert resp.status_code == 503 and resp.json()["error"]["tier_status"] == "unreachable"
    tiers = client.get("/api/models/tiers").json()["tiers"]
    assert {t["status"] for t in tiers} == {"unreachable"}
    assert [r.result for r in audit_rows(server)] == ["unavailable", "unavailable"]


def test_unknown_tier_and_bad_bodies(server):
    client = server.client(server.add_user("alice", "pro"))
    resp = client.post("/api/models/tier", json={"tier": "ultra"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_tier"
    for body in ({}, {"tier": 3}, {"tier": ""}, {"tier": "pro", "extra": 1}, [], "pro"):
        resp = client.post("/api/models/tier", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["error"]["code"] == "invalid_request"
    resp = client.post("/api/models/tier", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert client.get("/api/models/tiers").json()["active"] == "standard"


def test_a_slow_load_answers_202_warming_and_finishes_in_the_background(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, switch_warm_wait=0.2)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    fake_ollama.load_delay = 1.0
    resp = client.post("/api/models/tier", json={"tier": "pro"})
    assert resp.status_code == 202 and resp.json()["status"] == "warming"
    assert client.get("/api/models/tiers").json()["active"] == "pro"
    statuses = [t["status"] for t in client.get("/api/models/tiers").json()["tiers"] if t["tier"] == "pro"]
    assert statuses == ["warming"]

    async def same_load(rt):  # the single-flight load the switch started
        await rt.warmer.start(rt.catalog.tiers["pro"])

    server.call(same_load)
    server.refresh_status()
    assert [t["status"] for t in client.get("/api/models/tiers").json()["tiers"] if t["tier"] == "pro"] == ["ready"]
    assert fake_ollama.load_count[PRO] == 1
    assert audit_rows(server)[-1].result == "warming"


def test_a_failed_load_is_an_error_and_keeps_the_old_tier(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    fake_ollama.fail[CODE] = "load_fail"
    resp = client.post("/api/models/tier", json={"tier": "code"})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "model_load_failed"
    assert client.get("/api/models/tiers").json()["active"] == "standard"
    assert audit_rows(server)[-1].result == "failed"


def test_a_slow_backend_never_holds_the_tiers_page(start_server, fake_ollama):
    fake_ollama.status_delay = 5
    server = start_server(ollama_host=fake_ollama.url, status_timeout=0.3)
    client = server.client(server.add_user("alice", "pro"), timeout=3)
    body = client.get("/api/models/tiers").json()
    assert {t["status"] for t in body["tiers"]} == {"unreachable"}
    assert "no answer within" in body["tiers"][0]["status_reason"]


def test_status_reports_backends_and_models(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    body = client.get("/api/models/status").json()
    [backend] = body["backends"]
    assert backend["reachable"] and backend["hosts"][0]["version"] == fake_ollama.version
    assert backend["hosts"][0]["latency_ms"] is not None
    models = {m["tier"]: m for m in body["models"]}
    assert models["standard"]["loaded"] and models["standard"]["expires_at"]
    assert models["pro"]["installed"] and not models["pro"]["loaded"] and models["pro"]["size"] == 8_988_124_069


def test_authentication_is_required_and_checked(server):
    anon = server.client()
    for method, path in (("GET", "/api/models/tiers"), ("POST", "/api/models/tier"), ("GET", "/api/models/status")):
        resp = anon.request(method, path, json={"tier": "pro"})
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "not_authenticated"
    assert server.client("ky_wrong").get("/api/models/tiers").status_code == 401
    resp = anon.get("/api/models/tiers", headers={"Authorization": "Basic abc"})
    assert resp.status_code == 401


def test_browser_session_needs_the_csrf_token_for_a_switch(server):
    server.add_user("carol", "pro", password="correct horse")
    client = server.client()
    assert client.post("/api/auth/login", json={"name": "carol", "password": "wrong pass"}).status_code == 401
    resp = client.post("/api/auth/login", json={"name": "carol", "password": "correct horse"})
    assert resp.status_code == 200
    cookie = resp.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    csrf = resp.json()["csrf_token"]
    assert client.post("/api/models/tier", json={"tier": "pro"}).json()["error"]["code"] == "csrf_failed"
    resp = client.post("/api/models/tier", json={"tier": "pro"}, headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 200
    assert client.get("/api/auth/me").json()["csrf_token"] == csrf
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert client.get("/api/models/tiers").status_code == 401
