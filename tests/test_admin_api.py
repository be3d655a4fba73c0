"""The admin page's API over real HTTP: users and plans, the audit listing (SPEC F7, F9)."""

from __future__ import annotations


def test_only_admins_reach_the_admin_api(server):
    user = server.client(server.add_user("sam", "standard"))
    for method, path in (("GET", "/api/admin/users"), ("PUT", "/api/admin/users/sam/plan"), ("GET", "/api/admin/audit")):
        resp = user.request(method, path, json={"plan": "pro"})
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden", (path, resp.text)
    assert server.client().get("/api/admin/users").status_code == 401


def test_admin_lists_users_and_changes_a_plan_with_an_audit_entry(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    server.add_user("sam", "standard")
    body = admin.get("/api/admin/users").json()
    assert body["plans"] == ["standard", "pro"]
    assert [(u["name"], u["plan"], u["is_admin"], u["active_tier"]) for u in body["users"]] == [
        ("root", "pro", True, "standard"),
        ("sam", "standard", False, "standard"),
    ]
    resp = admin.put("/api/admin/users/sam/plan", json={"plan": "pro"})
    assert resp.status_code == 200 and resp.json()["plan"] == "pro"
    [entry] = admin.get("/api/admin/audit", params={"action": "plan_change"}).json()["entries"]
    assert (entry["actor"], entry["subject"], entry["details"]) == ("root", "sam", {"from": "standard", "to": "pro"})
    assert entry["request_id"] == resp.headers["x-request-id"]


def test_plan_changes_are_validated(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    resp = admin.put("/api/admin/users/nobody/plan", json={"plan": "pro"})
    assert resp.status_code == 404
    server.add_user("sam", "standard")
    resp = admin.put("/api/admin/users/sam/plan", json={"plan": "platinum"})
    assert resp.status_code == 422 and "platinum" in resp.json()["error"]["message"]
    assert admin.put("/api/admin/users/sam/plan", json={}).status_code == 422


def test_audit_filters_and_pages(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    sam = server.client(server.add_user("sam", "standard"))
    ann = server.client(server.add_user("ann", "pro"))
    assert sam.post("/api/models/tier", json={"tier": "pro"}).status_code == 403
    for tier in ("pro", "standard", "code"):
        assert ann.post("/api/models/tier", json={"tier": tier}).status_code == 200
    entries = admin.get("/api/admin/audit", params={"action": "switch"}).json()["entries"]
    assert [(e["subject"], e["to_tier"], e["result"]) for e in entries] == [
        ("ann", "code", "ready"),
        ("ann", "standard", "ready"),
        ("ann", "pro", "ready"),
        ("sam", "pro", "denied"),
    ]
    assert [e["subject"] for e in admin.get("/api/admin/audit", params={"result": "denied"}).json()["entries"]] == ["sam"]
    assert len(admin.get("/api/admin/audit", params={"user": "ann", "tier": "code"}).json()["entries"]) == 1
    first = admin.get("/api/admin/audit", params={"limit": 2, "action": "switch"}).json()
    second = admin.get("/api/admin/audit", params={"limit": 2, "action": "switch", "before_id": first["next_before_id"]}).json()
    assert [e["to_tier"] for e in second["entries"]] == ["pro", "pro"]
    assert admin.get("/api/admin/audit", params={"limit": 0}).status_code == 422

