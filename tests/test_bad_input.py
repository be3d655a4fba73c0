"""No input makes the server answer 500 (SPEC N3); odd headers are handled."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("POST", "/api/models/tier", {"content": b"\xff\xfe\x00", "headers": {"content-type": "application/json"}}),
        ("POST", "/api/models/tier", {"content": b'{"tier": "' + b"a" * 100_000 + b'"}', "headers": {"content-type": "application/json"}}),
        ("POST", "/api/models/tier", {"content": b"tier=pro", "headers": {"content-type": "application/x-www-form-urlencoded"}}),
        ("POST", "/api/models/tier", {"json": {"tier": "\u0000"}}),
        ("POST", "/api/models/tier", {"json": {"tier": "pro" * 40}}),
        ("POST", "/api/models/tier", {"content": b"[" * 5000, "headers": {"content-type": "application/json"}}),
        ("POST", "/api/conversations", {"json": {"title": ["x"]}}),
        ("POST", "/api/conversations", {"json": {"title": "x" * 201}}),
        ("GET", "/api/conversations/" + "z" * 300, {}),
        ("GET", "/api/conversations/%00", {}),
        ("POST", "/api/conversations/x/messages", {"json": {"content": "hi"}}),
        ("GET", "/api/conversations/x/messages/y/stream", {}),
        ("DELETE", "/api/conversations/" + "%2e%2e%2f" * 3, {}),
        ("GET", "/../../etc/passwd", {}),
        ("PUT", "/api/models/tier", {"json": {"tier": "pro"}}),
        ("POST", "/api/auth/login", {"json": {"name": "", "password": ""}}),
        ("POST", "/api/auth/login", {"json": {"name": "x" * 65, "password": "y"}}),
        ("POST", "/api/models/warm", {"json": {"tier": "nope"}}),
        ("POST", "/api/conversations", {"json": {"title": "a\u0000b"}}),
        ("GET", "/api/admin/audit?user=%00", {}),
    ],
)
def test_odd_requests_get_4xx_json_never_500(server, method, path, kwargs):
    client = server.client(server.add_user("alice", "pro"))
    resp = client.request(method, path, **kwargs)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.headers.get("content-type", "").startswith("application/json"):
        assert set(resp.json()["error"]) >= {"code", "message"}


def test_a_request_id_is_echoed_only_when_safe(server):
    client = server.client()
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    unsafe = client.get("/healthz", headers={"X-Request-ID": "evil\tinjected value"}).headers["x-request-id"]
    assert unsafe != "evil\tinjected value" and len(unsafe) == 16
