"""Upgrade requests over real HTTP (SPEC F19; issue 10 item 8): ask, list, approve, decline, audited."""

from __future__ import annotations

import concurrent.futures

from sqlalchemy import select

from kynsey.storage.models import AuditEntry

FIELDS = {"id", "plan", "status", "note", "created_at", "decided_at", "decided_by"}


def audit_actions(server) -> list[tuple[str, str, str]]:
    async def work(rt):
        async with rt.sessions() as db:
            rows = await db.scalars(
                select(AuditEntry).where(AuditEntry.action.like("upgrade_%")).order_by(AuditEntry.id)
            )
            return [(e.action, e.actor, e.result) for e in rows]

    return server.call(work)


def test_a_user_asks_and_an_admin_approves_which_changes_the_plan(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    sam = server.client(server.add_user("sam", "standard"))
    assert sam.post("/api/models/tier", json={"tier": "pro"}).status_code == 403
    resp = sam.post("/api/upgrade-requests", json={"plan": "pro", "note": "for the code tier"})
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert set(made) == FIELDS
    assert (made["plan"], made["status"], made["note"], made["decided_at"], made["decided_by"]) == (
        "pro",
        "pending",
        "for the code tier",
        None,
        None,
    )
    again = sam.post("/api/upgrade-requests", json={"plan": "pro"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    pending = admin.get("/api/admin/upgrade-requests", params={"status": "pending"}).json()["requests"]
    assert [(r["id"], r["user"], r["plan"]) for r in pending] == [(made["id"], "sam", "pro")]
    resp = admin.post(f"/api/admin/upgrade-requests/{made['id']}/approve")
    assert resp.status_code == 200 and resp.json()["status"] == "approved" and resp.json()["decided_by"] == "root"
    assert sam.post("/api/models/tier", json={"tier": "pro"}).status_code == 200  # the plan changed
    assert admin.post(f"/api/admin/upgrade-requests/{made['id']}/decline").status_code == 409  # already decided
    mine = sam.get("/api/upgrade-requests").json()["requests"]
    assert [(r["status"], r["decided_by"]) for r in mine] == [("approved", "root")] and "user" not in mine[0]
    assert audit_actions(server) == [
        ("upgrade_request", "sam", "pending"),
        ("upgrade_approve", "root", "approved"),
    ]


def test_a_declined_request_leaves_the_plan_and_a_new_one_may_follow(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    sam = server.client(server.add_user("sam", "standard"))
    first = sam.post("/api/upgrade-requests", json={"plan": "pro"}).json()["id"]
    resp = admin.post(f"/api/admin/upgrade-requests/{first}/decline")
    assert resp.json()["status"] == "declined" and resp.json()["user"] == "sam"
    assert sam.get("/api/auth/me").json()["user"]["plan"] == "standard"
    second = sam.post("/api/upgrade-requests", json={"plan": "pro"})
    assert second.status_code == 201
    assert [r["status"] for r in sam.get("/api/upgrade-requests").json()["requests"]] == ["pending", "declined"]
    assert [r["status"] for r in admin.get("/api/admin/upgrade-requests").json()["requests"]] == ["pending", "declined"]
    assert [
        r["id"] for r in admin.get("/api/admin/upgrade-requests", params={"status": "declined"}).json()["requests"]
    ] == [first]
    assert audit_actions(server)[1] == ("upgrade_decline", "root", "declined")


def test_bad_requests_are_clear_errors(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    sam = server.client(server.add_user("sam", "standard"))
    for body, words in (
        ({"plan": "gold"}, "unknown plan 'gold'; the catalog declares: standard, pro"),
        ({"plan": "standard"}, "already on the standard plan"),
        ({"plan": "pro", "note": "x" * 501}, "note"),
        ({}, "plan"),
    ):
        resp = sam.post("/api/upgrade-requests", json=body)
        assert resp.status_code == 422 and words in resp.text, resp.text
    assert sam.get("/api/admin/upgrade-requests").status_code == 403
    assert sam.post("/api/admin/upgrade-requests/1/approve").status_code == 403
    assert admin.post("/api/admin/upgrade-requests/999/approve").status_code == 404
    assert admin.post(f"/api/admin/upgrade-requests/{2**40}/approve").status_code == 422
    assert admin.get("/api/admin/upgrade-requests", params={"status": "lost"}).status_code == 422
    assert server.client().post("/api/upgrade-requests", json={"plan": "pro"}).status_code == 401


def test_two_requests_at_once_store_one(server):
    sam = server.client(server.add_user("sam", "standard"))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = sorted(
            pool.map(lambda _: sam.post("/api/upgrade-requests", json={"plan": "pro"}).status_code, range(4))
        )
    assert codes == [201, 409, 409, 409]
    assert len(sam.get("/api/upgrade-requests").json()["requests"]) == 1
