"""Two instances sharing Redis hold the switch limit exactly (SPEC F8, N4, N5)."""

from __future__ import annotations

import uuid

from tests.conftest import HEALTHY_REDIS_TIMEOUT, REDIS_URL


def test_the_limit_holds_exactly_across_two_instances(start_server, fake_ollama):
    prefix = f"kynsey-test-{uuid.uuid4().hex[:8]}"
    shared = dict(ollama_host=fake_ollama.url, redis_url=REDIS_URL, redis_prefix=prefix, redis_timeout=HEALTHY_REDIS_TIMEOUT)
    one, two = start_server(**shared), start_server(**shared)
    for server in (one, two):  # both see the tiers ready before the first switch: a 503 counts nothing
        server.refresh_status()
    token = one.add_user("alice", "pro")
    clients = [one.client(token), two.client(token)]
    codes = []
    targets = ["pro", "standard"] * 5 + ["code"] * 6  # every request asks for a change
    for i, target in enumerate(targets):
        resp = clients[i % 2].post("/api/models/tier", json={"tier": target})
        codes.append(resp.status_code if resp.status_code in (200, 429) else (resp.status_code, resp.text[:200]))
    assert codes == [200] * 10 + [429] * 6, str(codes)
