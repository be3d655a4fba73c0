"""The web layer's limits (issue 9, items 7 and 9): a body size limit checked before
any parsing, a bounded list of problems, and security headers on every answer."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from kynsey.web.middleware import CONTENT_SECURITY_POLICY

ONE_MIB = 1_048_576
MILLION_KEYS = ("{" + ",".join(f'"k{i}":0' for i in range(1_000_000)) + "}").encode()


class RawHttp:
    """One HTTP/1.1 connection on a plain socket, to send bodies no well-behaved client would."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)  # a hang guard, not a timing check
        self.sent = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def send_quietly(self, data: bytes) -> None:
        """Send from another thread; the server may stop reading once it has answered."""

        def write() -> None:
            try:
                self.send(data)
            except OSError:
                pass

        threading.Thread(target=write, daemon=True).start()

    def response(self) -> tuple[int, dict[str, str], bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            body += self.sock.recv(65536)
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        self.sock.close()


def post_head(path: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: kynsey", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_too_large(status: int, body: bytes, limit: int = ONE_MIB) -> None:
    assert status == 413, body[:300]
    assert json.loads(body)["error"] == {
        "code": "payload_too_large", "message": f"the request body is larger than {limit} bytes", "limit": limit
    }


def test_a_12_mb_body_of_a_million_keys_is_refused_before_it_is_read(server):
    conn = RawHttp(server.url)
    conn.send(post_head("/api/auth/login", Content_Length=str(len(MILLION_KEYS))))
    status, _, body = conn.response()  # answered with none of the body sent
    assert conn.sent < 200
    assert_too_large(status, body)
    conn.send_quietly(MILLION_KEYS)  # the client sends it anyway: the server skips it unparsed
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
    conn.close()


def test_a_streamed_body_is_refused_once_it_passes_the_limit_without_waiting_for_its_end(server):
    conn = RawHttp(server.url)
    conn.send(post_head("/api/auth/login", Transfer_Encoding="chunked"))
    chunk = b"x" * 65536
    conn.send_quietly(b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(48)))  # 3 MiB, never ended
    status, _, body = conn.response()
    assert_too_large(status, body)
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
    conn.close()


def test_the_limit_is_a_setting_and_a_body_at_the_limit_passes(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, max_message_chars=100, max_body_bytes=1200)
    client = server.client(server.add_user("alice", "pro"))
    pad = 1200 - len(json.dumps({"title": ""}))
    at_limit = json.dumps({"title": " " * pad}).encode()
    assert len(at_limit) == 1200
    resp = client.post("/api/conversations", content=at_limit, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and "title" in resp.text  # parsed: too long a title, not too large a body
    over = client.post("/api/conversations", content=at_limit + b" ", headers={"content-type": "application/json"})
    assert over.status_code == 413 and over.json()["error"]["limit"] == 1200


def test_a_body_limit_too_small_for_a_message_is_refused_at_start_up():
    from pydantic import ValidationError

    from kynsey.settings import Settings

    with pytest.raises(ValidationError, match="cannot hold a message of 32000 characters"):
        Settings(max_body_bytes=100_000)


def test_a_million_unknown_fields_under_the_limit_make_one_problem(server):
    body = ("{" + ",".join(f'"k{i}":0' for i in range(80_000)) + "}").encode()
    assert len(body) < ONE_MIB
    with server.client() as client:
        resp = client.post("/api/auth/login", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and len(resp.content) < 2000
    problems = resp.json()["error"]["problems"]
    assert problems == [{"field": "body", "problem": "Value error, unknown fields: 'k0', 'k1', 'k2', 'k3', 'k4' and 79995 more"}]


def test_problems_are_capped_at_twenty_with_the_total_said(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    resp = admin.put("/api/admin/flags/model_switching", json={"allow": list(range(500))})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert len(error["problems"]) == 20 and error["problems_total"] == 500
    assert error["problems"][0] == {"field": "allow.0", "problem": "Input should be a valid string"}


@pytest.mark.parametrize("path", ["/", "/index.html", "/app.js", "/api/models/tiers", "/healthz", "/nope", "/api/auth/me"])
def test_every_answer_carries_the_security_headers(server, path):
    with server.client() as client:
        resp = client.get(path)
    assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    policy = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY


def test_an_unexpected_error_is_a_json_500_with_the_headers_and_the_request_id(server):
    async def boom() -> None:
        raise RuntimeError("a bug")

    server.app.router.add_api_route("/api/test-boom", boom)
    server.app.router.routes.insert(0, server.app.router.routes.pop())  # before the static mount at /
    with server.client() as client:
        resp = client.get("/api/test-boom", headers={"X-Request-ID": "boom-1"})
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal" and "a bug" not in resp.text
    assert resp.headers["x-request-id"] == "boom-1" and resp.headers["x-frame-options"] == "DENY"
