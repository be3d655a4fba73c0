"""The automatic rollback guard, driven by real failing switches and real slow replies (SPEC F12)."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from kynsey.rollout.flags import FLAG
from kynsey.rollout.guard import MAX_WINDOW_REPLIES
from kynsey.storage.models import AuditEntry, User
from tests.sse import collect

MODELS = {"standard": "llama3.2:3b-instruct-fp16", "pro": "qwen2.5:14b-instruct", "code": "qwen2.5-coder:7b-instruct"}
FLAG_URL = f"/api/admin/flags/{FLAG}"
# No limits in the way, and no background status refresh racing the explicit ones: every switch
# must see its target cold (and so preload) for fail_ratio to pick exactly the failing switches.
FAST = dict(switch_rate_limit="100000/minute", chat_rate_limit="100000/minute", status_refresh=60,
            guard_sustain_seconds=0)  # these tests judge the thresholds; test_a_breach_must_hold judges the hold


def rollbacks(server) -> list[AuditEntry]:
    async def work(rt):
        async with rt.sessions() as db:
            return list(await db.scalars(select(AuditEntry).where(AuditEntry.action == "rollback").order_by(AuditEntry.id)))

    return server.call(work)


def stored_tiers(server) -> dict[str, str | None]:
    async def work(rt):
        async with rt.sessions() as db:
            return {u.name: u.active_tier for u in await db.scalars(select(User))}

    return server.call(work)


def rollback_metric(server, trigger: str) -> float:
    text = server.client().get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "kynsey_rollbacks_total" and sample.labels == {"trigger": trigger}:
                return sample.value
    raise AssertionError("kynsey_rollbacks_total is not exported")


def settle(server) -> dict:
    """Wait for a rollback being written (if any) and return the guard's figures."""

    async def work(rt):
        await rt.guard.aclose()
        return rt.guard.status()

    return server.call(work)


class Switcher:
    """Switch one user between Pro and Code, making the target cold first so every switch preloads."""

    def __init__(self, server, fake, token: str) -> None:
        self.server, self.fake, self.client = server, fake, server.client(token)
        self.active = "standard"

    def once(self):
        target = "code" if self.active == "pro" else "pro"
        self.fake.evict(MODELS[target])
        self.server.refresh_status()
        resp = self.client.post("/api/models/tier", json={"tier": target})
        if resp.status_code == 200:
            self.active = target
        return resp


def test_switch_errors_past_one_percent_roll_back_exactly_once(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, **FAST)
    server.refresh_status()
    admin = server.client(server.add_user("root", "pro", admin=True))
    bystander = server.client(server.add_user("bob", "pro"))
    assert bystander.post("/api/models/tier", json={"tier": "code"}).status_code == 200  # attempt 1, a success
    alice = Switcher(server, fake_ollama, server.add_user("alice", "pro"))
    fake_ollama.fail_ratio = (0.02, "load_fail")  # the 50th preload from now fails

    for _ in range(49):
        assert alice.once().status_code == 200
    assert settle(server)["state"] == "armed" and rollbacks(server) == []
    failed = alice.once()
    assert failed.status_code == 502 and failed.json()["error"]["code"] == "model_load_failed"
    assert settle(server)["state"] == "tripped"

    for _ in range(20):  # the kill switch holds: no more switches, no second rollback
        resp = alice.once()
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "feature_disabled"
    [entry] = rollbacks(server)
    details = json.loads(entry.details)
    assert (entry.actor, entry.subject, entry.result) == ("guard", FLAG, "rolled_back")
    assert (details["trigger"], details["attempts"], details["failures"], details["window_seconds"]) == (
        "switch_errors", 51, 1, 300.0
    )
    assert details["users_reverted"] == 2  # alice (pro) and bob (code); root never switched
    assert entry.reason.startswith("switch error rate 1.96% (1 of 51 switch attempts failed in the last 300 s)")
    assert rollback_metric(server, "switch_errors") == 1
    assert stored_tiers(server) == {"root": None, "bob": None, "alice": None}
    tiers = bystander.get("/api/models/tiers").json()
    assert tiers["switching_enabled"] is False and tiers["active"] == "standard"
    flag = admin.get(FLAG_URL).json()
    assert flag["state"] == "off" and flag["killed"] is True
    assert flag["last_rollback"]["trigger"] == "switch_errors" and flag["last_rollback"]["reason"] == entry.reason


def test_reenabling_resets_the_window_and_arms_the_guard_again(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, guard_min_switches=20, **FAST)
    server.refresh_status()
    admin = server.client(server.add_user("root", "pro", admin=True))
    alice = Switcher(server, fake_ollama, server.add_user("alice", "pro"))
    fake_ollama.fail_ratio = (0.05, "load_fail")  # the 20th fails: 1 of 20 = 5%
    assert [alice.once().status_code for _ in range(20)] == [200] * 19 + [502]
    assert settle(server)["state"] == "tripped" and len(rollbacks(server)) == 1

    body = admin.put(FLAG_URL, json={"state": "on"}).json()
    assert body["killed"] is False and body["enabled_at"] > body["rollback_at"]
    figures = settle(server)
    assert figures["state"] == "armed" and figures["switches"]["attempts"] == 0
    alice.active = "standard"  # the rollback reverted her
    fake_ollama.fail_ratio = (0.05, "load_fail")
    # With the old window kept, the first of these would trip at once (1 failure in 21).
    assert [alice.once().status_code for _ in range(19)] == [200] * 19
    assert len(rollbacks(server)) == 1
    assert alice.once().status_code == 502
    assert settle(server)["state"] == "tripped"
    assert len(rollbacks(server)) == 2 and rollback_metric(server, "switch_errors") == 2


def test_at_the_threshold_and_with_user_refusals_there_is_no_rollback(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, **FAST)
    server.refresh_status()
    basic = server.client(server.add_user("sam", "standard"))
    alice = Switcher(server, fake_ollama, server.add_user("alice", "pro"))
    fake_ollama.fail_ratio = (0.01, "load_fail")  # 1 of 100: exactly 1%, which does not exceed 1%
    codes = []
    for i in range(100):
        codes.append(alice.once().status_code)
        if i % 4 == 0:  # refusals that are the user's business are neither failures nor attempts
            assert basic.post("/api/models/tier", json={"tier": "pro"}).status_code == 403
            assert basic.post("/api/models/tier", json={"tier": "ultra"}).status_code == 404
    assert codes == [200] * 99 + [502]
    figures = settle(server)
    assert figures["state"] == "armed"
    assert (figures["switches"]["attempts"], figures["switches"]["failures"]) == (100, 1)
    assert rollbacks(server) == [] and rollback_metric(server, "switch_errors") == 0
    assert basic.get("/api/models/tiers").json()["switching_enabled"] is True


def test_a_second_instance_tripping_later_does_not_roll_back_again(start_server, fake_ollama):
    a = start_server(ollama_host=fake_ollama.url, guard_min_switches=2, guard_sustain_seconds=0)
    b = start_server(ollama_host=fake_ollama.url, guard_min_switches=2, flag_cache_seconds=3600, guard_sustain_seconds=0)
    b.call(lambda rt: rt.flags.get())  # B's cache says "on" for the rest of the test

    async def fail_twice(rt):
        rt.guard.record_switch("failed")
        rt.guard.record_switch("unavailable")
        await rt.guard.aclose()
        return rt.guard.status()

    assert a.call(fail_twice)["state"] == "tripped"
    assert b.call(fail_twice)["state"] == "tripped"
    assert len(rollbacks(a)) == 1
    assert rollback_metric(a, "switch_errors") == 1 and rollback_metric(b, "switch_errors") == 0


def feed(values):
    async def work(rt):
        for value in values:
            rt.guard.record_reply(value)
        return rt.guard.status()

    return work


def test_ttft_degradation_over_20_percent_rolls_back_and_not_below(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, guard_sustain_seconds=0)

    figures = server.call(feed([100.0] * 50))
    assert figures["ttft"]["baseline_ttft_ms"] == 100.0 and figures["ttft"]["replies"] == 0
    figures = server.call(feed([119.0] * 20 + [121.0] * 20))  # median 120: exactly 20% up
    assert figures["state"] == "armed" and figures["ttft"]["current_ttft_ms"] == 120.0
    assert server.call(feed([121.0]))["state"] == "tripping"  # median 121: 21% up
    assert settle(server)["state"] == "tripped"
    server.call(feed([500.0] * 50))
    [entry] = rollbacks(server)
    details = json.loads(entry.details)
    assert (details["trigger"], details["baseline_ttft_ms"], details["current_ttft_ms"], details["replies"]) == (
        "ttft", 100.0, 121.0, 41
    )
    assert "is 21% above the baseline 100 ms (median of the first 50 replies)" in entry.reason
    assert rollback_metric(server, "ttft") == 1


def test_slow_real_replies_trip_the_latency_guard(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, guard_baseline_replies=5, guard_min_replies=5, **FAST)
    server.refresh_status()
    client = server.client(server.add_user("alice", "pro"))
    assert client.post("/api/models/tier", json={"tier": "pro"}).status_code == 200
    cid = client.post("/api/conversations", json={"title": "t"}).json()["id"]

    def chat() -> dict:
        return collect(client, "POST", f"/api/conversations/{cid}/messages", json={"content": "hi"})[0][1]

    for _ in range(5):
        assert chat()["tier"] == "pro"
    baseline = settle(server)["ttft"]["baseline_ttft_ms"]
    assert baseline is not None
    fake_ollama.first_token_delay = max(0.3, baseline * 2 / 1000)  # well past 20% slower
    for _ in range(5):
        chat()
    assert settle(server)["state"] == "tripped"
    [entry] = rollbacks(server)
    details = json.loads(entry.details)
    assert details["trigger"] == "ttft" and details["current_ttft_ms"] > details["baseline_ttft_ms"] * 1.2
    assert stored_tiers(server) == {"alice": None}
    fake_ollama.first_token_delay = 0
    assert chat()["tier"] == "standard"  # everyone is back on the default tier


def test_a_breach_must_hold_for_the_sustain_period_before_it_trips(start_server, fake_ollama):
    """Load noise (a burst of slow replies that passes) must not turn switching off for everyone."""
    server = start_server(ollama_host=fake_ollama.url, guard_sustain_seconds=30, guard_min_switches=10)
    now = [1000.0]

    async def use_clock(rt):
        rt.guard._clock = lambda: now[0]
        rt.guard.reset()

    def at(seconds: float, work):
        now[0] = 1000.0 + seconds
        return server.call(work)

    def switches(result: str, n: int):
        async def work(rt):
            for _ in range(n):
                rt.guard.record_switch(result)
            return rt.guard.status()

        return work

    server.call(use_clock)
    at(0, feed([100.0] * 50))  # the baseline
    assert at(1, feed([300.0] * 30))["state"] == "armed"  # a burst: breached, but not for 30 s yet
    assert at(20, feed([100.0] * 61))["state"] == "armed"  # it passed: the median fell back, the breach ends
    assert at(45, feed([300.0] * 200))["state"] == "armed"  # a new breach starts its own clock at 45 s
    assert at(74, feed([300.0]))["state"] == "armed"
    assert at(75, feed([300.0]))["state"] == "tripping"  # held for 30 s: trip
    figures = settle(server)
    assert figures["state"] == "tripped" and figures["last_rollback"]["figures"]["sustained_seconds"] == 30.0
    assert len(rollbacks(server)) == 1


def test_switch_errors_must_also_hold_before_they_trip(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, guard_sustain_seconds=30, guard_min_switches=10)
    now = [1000.0]

    async def record(rt, results):
        rt.guard._clock = lambda: now[0]
        for result in results:
            rt.guard.record_switch(result)
        return rt.guard.status()["state"]

    assert server.call(lambda rt: record(rt, ["ready"] * 9 + ["failed"])) == "armed"  # 10% at once: breached
    now[0] += 29
    assert server.call(lambda rt: record(rt, ["failed"])) == "armed"
    now[0] += 1
    assert server.call(lambda rt: record(rt, ["failed"])) == "tripping"


def test_the_latency_window_holds_the_newest_replies_only_up_to_its_bound(start_server, fake_ollama):
    """Past ``MAX_WINDOW_REPLIES`` in the window (a busy fleet's replies all arrive here), the oldest
    leave it, as they would with time: memory and the sorted insert stay bounded."""
    server = start_server(ollama_host=fake_ollama.url, guard_sustain_seconds=0)
    server.call(feed([100.0] * 50))  # the baseline
    server.call(feed([115.0] * MAX_WINDOW_REPLIES))
    figures = server.call(feed([100.0] * (MAX_WINDOW_REPLIES // 2 + 1)))
    assert figures["state"] == "armed"
    assert figures["ttft"]["replies"] == MAX_WINDOW_REPLIES and figures["ttft"]["current_ttft_ms"] == 100.0
