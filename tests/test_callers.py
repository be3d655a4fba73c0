"""Callers kept for a moment (kynsey/accounts/callers.py): a change made on this instance counts at once,
one made elsewhere within KYNSEY_AUTH_CACHE_SECONDS, and nothing stale is kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from kynsey.accounts.callers import Callers, copy_user
from kynsey.storage.models import User
from tests.live import eventually


def write_elsewhere(url: str, statement: str) -> None:
    """A write through an engine of its own, as another instance or the CLI makes it."""

    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def plan_of(client) -> str:
    return client.get("/api/auth/me").json()["user"]["plan"]


def test_a_change_here_counts_at_once_and_one_made_elsewhere_within_the_bound(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, auth_cache_seconds=1.0)
    admin = server.client(server.add_user("root", "pro", admin=True))
    ann = server.client(server.add_user("ann", "standard"))
    assert plan_of(ann) == "standard"  # ann is kept now
    assert admin.put("/api/admin/users/ann/plan", json={"plan": "pro"}).status_code == 200
    assert plan_of(ann) == "pro"  # a change made here: at once
    write_elsewhere(server.settings.effective_database_url, "UPDATE users SET plan = 'standard' WHERE name = 'ann'")
    eventually(lambda: plan_of(ann) == "standard", "a plan changed elsewhere to count within the bound")
    write_elsewhere(server.settings.effective_database_url, "DELETE FROM api_tokens")
    eventually(lambda: ann.get("/api/auth/me").status_code == 401, "a token revoked elsewhere to be refused")


def test_with_no_keeping_a_change_made_elsewhere_counts_at_once(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, auth_cache_seconds=0)
    ann = server.client(server.add_user("ann", "standard"))
    assert plan_of(ann) == "standard"
    write_elsewhere(server.settings.effective_database_url, "UPDATE users SET plan = 'pro' WHERE name = 'ann'")
    assert plan_of(ann) == "pro"


def test_a_lookup_that_a_change_overtook_is_not_kept():
    async def scenario() -> list[str]:
        callers, answers, release = Callers(60), iter(["before", "after"]), asyncio.Event()

        async def slow_lookup() -> str:
            answer = next(answers)
            await release.wait()
            return answer

        lookup = asyncio.ensure_future(callers.find("k", slow_lookup, until=lambda _: None))
        await asyncio.sleep(0)
        callers.forget_all()  # a write to a caller table ran while the lookup read the old row
        release.set()
        first, _ = await lookup
        second, looked_up = await callers.find("k", slow_lookup, until=lambda _: None)
        return [first, second, str(looked_up)]

    assert asyncio.run(scenario()) == ["before", "after", "True"]


def test_a_caller_is_kept_no_longer_than_its_token_or_session_lasts():
    async def scenario() -> list[bool]:
        now = [0.0]
        callers = Callers(60, clock=lambda: now[0])
        ends = datetime.now(UTC) + timedelta(seconds=5)

        async def lookup() -> str:
            return "ann"

        looked_up = [(await callers.find("k", lookup, until=lambda _: ends))[1]]
        now[0] = 3.0
        looked_up.append((await callers.find("k", lookup, until=lambda _: ends))[1])
        now[0] = 6.0  # past the token's expiry, well inside the 60 s
        looked_up.append((await callers.find("k", lookup, until=lambda _: ends))[1])
        return looked_up

    assert asyncio.run(scenario()) == [True, False, True]


def test_each_request_gets_a_copy_of_its_caller_that_changes_nothing_else():
    kept = User(id=7, name="ann", plan="pro", is_admin=False, active_tier="pro",
                created_at=datetime(2026, 1, 2, tzinfo=UTC))
    one, two = copy_user(kept), copy_user(kept)
    assert (one.id, one.name, one.plan, one.active_tier, one.created_at) == (7, "ann", "pro", "pro", kept.created_at)
    one.plan, one.active_tier = "standard", "standard"
    assert (kept.plan, two.plan, two.active_tier) == ("pro", "pro", "pro")
    assert inspect(one).transient and inspect(two).session is None


def _gated_lookups(answers: list):
    """A lookup that counts its calls and answers (or raises) the next of ``answers`` once ``gate`` opens."""
    gate, calls = asyncio.Event(), []

    async def lookup():
        calls.append(1)
        answer = answers[len(calls) - 1]
        await gate.wait()
        if isinstance(answer, Exception):
            raise answer
        return answer

    return lookup, gate, calls


def test_callers_missed_at_the_same_moment_share_one_lookup_and_a_later_change_starts_its_own():
    async def scenario():
        callers = Callers(60)
        lookup, gate, calls = _gated_lookups(["before", "after"])
        burst = [asyncio.ensure_future(callers.find("k", lookup, until=lambda _: None)) for _ in range(50)]
        await asyncio.sleep(0)
        callers.forget_all()  # a change: a request from now on must not take the answer read before it
        late = asyncio.ensure_future(callers.find("k", lookup, until=lambda _: None))
        await asyncio.sleep(0)
        gate.set()
        return [await b for b in burst], await late, len(calls)

    burst, late, calls = asyncio.run(scenario())
    assert calls == 2
    assert {found for found, _ in burst} == {"before"}
    assert sorted(looked_up for _, looked_up in burst) == [False] * 49 + [True]  # one records the token's use
    assert late == ("after", True)


def test_a_shared_lookup_survives_its_first_caller_leaving_and_a_refusal_reaches_everyone_and_is_not_kept():
    class Refused(Exception):
        pass

    async def scenario():
        callers = Callers(60)
        lookup, gate, calls = _gated_lookups(["lost", "ann", Refused("revoked"), "ann again"])
        first = asyncio.ensure_future(callers.find("k", lookup, until=lambda _: None))
        await asyncio.sleep(0)
        others = [asyncio.ensure_future(callers.find("k", lookup, until=lambda _: None)) for _ in range(5)]
        await asyncio.sleep(0)
        first.cancel()  # its client left before the answer: the others look it up once more, together
        gate.set()
        answers = [await o for o in others]
        callers.forget_all()  # the token is revoked
        gate.clear()
        refusals = [asyncio.ensure_future(callers.find("k", lookup, until=lambda _: None)) for _ in range(3)]
        await asyncio.sleep(0)
        gate.set()
        refused = await asyncio.gather(*refusals, return_exceptions=True)
        after = await callers.find("k", lookup, until=lambda _: None)  # nothing was kept of the refusal
        return first.cancelled(), answers, refused, after, len(calls)

    cancelled, answers, refused, after, calls = asyncio.run(scenario())
    assert cancelled
    assert sorted(answers) == [("ann", False)] * 4 + [("ann", True)]
    assert [type(r) for r in refused] == [Refused] * 3
    assert after == ("ann again", True) and calls == 4
