"""Accounts from creation to removal over the admin API, effective at the next request on
every instance, each step audited (SPEC F7, F21; issue 13 items 1-3, issue 9 items 13-14)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from kynsey.accounts import lifecycle
from kynsey.accounts.service import get_user
from kynsey.accounts.sessions import end_sessions
from kynsey.audit import AuditRecord, append
from kynsey.audit.verify import verify_chain
from kynsey.errors import Conflict
from kynsey.storage.models import AuditEntry, Conversation, Message
from tests.live import eventually
from tests.sse import collect

PASSWORD = "correct horse battery"


def audit(server, action: str) -> list[AuditEntry]:
    async def work(rt):
        async with rt.sessions() as db:
            return list(await db.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))

    return server.call(work)


def count(server, model) -> int:
    async def work(rt):
        async with rt.sessions() as db:
            return await db.scalar(select(func.count()).select_from(model))

    return server.call(work)


def login(server, name: str, password: str = PASSWORD):
    client = server.client()
    resp = client.post("/api/auth/login", json={"name": name, "password": password})
    return client, resp


@pytest.fixture
def admin(server):
    return server.client(server.add_user("root", "pro", admin=True))


def test_an_admin_creates_a_user_who_logs_in(server, admin):
    resp = admin.post("/api/admin/users", json={"name": "ann", "plan": "standard", "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    assert {k: resp.json()[k] for k in ("name", "plan", "is_admin", "disabled", "tokens")} == {
        "name": "ann",
        "plan": "standard",
        "is_admin": False,
        "disabled": False,
        "tokens": 0,
    }
    _, resp = login(server, "ann")
    assert resp.status_code == 200 and resp.json()["user"]["name"] == "ann"
    [entry] = audit(server, "user_add")[-1:]
    assert (entry.actor, entry.subject) == ("root", "ann") and entry.request_id
    assert admin.post("/api/admin/users", json={"name": "ann", "plan": "standard"}).status_code == 409


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "mallory\n", "plan": "standard"}, "name"),  # '$' matched before a final newline
        ({"name": "bad name", "plan": "standard"}, "name"),
        ({"name": "carol", "plan": "gold"}, "plan"),
        ({"name": "carol", "plan": "standard", "password": "short"}, "password"),
        ({"name": "carol", "plan": "standard", "extra": 1}, "extra"),
    ],
)
def test_creation_refuses_bad_names_unknown_plans_and_short_passwords(server, admin, body, field):
    resp = admin.post("/api/admin/users", json=body)
    assert resp.status_code == 422 and field in resp.text, resp.text
    if field == "plan":
        assert "the catalog declares: standard, pro" in resp.json()["error"]["message"]
    assert [u["name"] for u in admin.get("/api/admin/users").json()["users"]] == ["root"]


def test_a_reset_password_ends_sessions_and_the_old_one_stops_working(server, admin):
    server.add_user("ann", "standard", password=PASSWORD)
    page, _ = login(server, "ann")
    assert page.get("/api/auth/me").status_code == 200
    resp = admin.put("/api/admin/users/ann/password", json={"password": "a brand new secret"})
    assert resp.status_code == 200, resp.text
    assert page.get("/api/auth/me").status_code == 401  # the session ended at once
    assert login(server, "ann")[1].status_code == 401
    assert login(server, "ann", "a brand new secret")[1].status_code == 200
    assert audit(server, "user_passwd")[-1].details == '{"sessions_ended": 1}'
    assert admin.put("/api/admin/users/ann/password", json={"password": "short"}).status_code == 422


def test_disable_refuses_token_session_and_login_on_every_instance_until_enabled(
    start_server, fake_ollama, admin, server
):
    other = start_server(ollama_host=fake_ollama.url)  # a second instance sharing the database
    token = server.add_user("ann", "standard", password=PASSWORD)
    page, _ = login(server, "ann")
    assert other.client(token).get("/api/auth/me").status_code == 200
    assert admin.put("/api/admin/users/ann/disabled", json={"disabled": True}).json()["disabled"] is True
    for client in (server.client(token), page):  # at once on the instance that disabled it
        resp = client.get("/api/auth/me")
        assert resp.status_code == 401, resp.text
    # The other instance kept ann as a caller for KYNSEY_AUTH_CACHE_SECONDS (1 s) at most.
    eventually(lambda: other.client(token).get("/api/auth/me").status_code == 401, "the other instance to refuse ann")
    assert other.client(token).get("/api/auth/me").json()["error"]["reason"] == "account_disabled"
    _, resp = login(other, "ann")
    assert resp.status_code == 401 and resp.json()["error"]["reason"] == "account_disabled"
    assert login(other, "ann", "wrong password!")[1].json()["error"].get("reason") is None  # no hint to guessers
    admin.put("/api/admin/users/ann/disabled", json={"disabled": False})
    assert other.client(token).get("/api/auth/me").status_code == 200  # its tokens were kept
    assert [e.action for e in audit(server, "user_disable") + audit(server, "user_enable")] == [
        "user_disable",
        "user_enable",
    ]


def test_admin_role_on_and_off_and_the_last_admin_stays(server, admin):
    token = server.add_user("ann", "standard")
    assert server.client(token).get("/api/admin/users").status_code == 403
    assert admin.put("/api/admin/users/ann/admin", json={"admin": True}).json()["is_admin"] is True
    assert server.client(token).get("/api/admin/users").status_code == 200
    assert admin.put("/api/admin/users/ann/admin", json={"admin": False}).json()["is_admin"] is False
    assert server.client(token).get("/api/admin/users").status_code == 403
    for method, path, body in (
        ("PUT", "/api/admin/users/root/admin", {"admin": False}),
        ("PUT", "/api/admin/users/root/disabled", {"disabled": True}),
        ("DELETE", "/api/admin/users/root", None),
    ):
        resp = admin.request(method, path, json=body)
        assert resp.status_code == 409 and "last enabled admin" in resp.json()["error"]["message"], path
    assert [e.details for e in audit(server, "user_admin")] == [
        '{"from": false, "to": true}',
        '{"from": true, "to": false}',
    ]


def test_tokens_are_listed_and_a_revoked_one_fails_at_once(server, admin):
    first = server.add_user("ann", "standard")
    tokens = admin.get("/api/admin/users/ann/tokens").json()["tokens"]
    assert len(tokens) == 1 and tokens[0]["last_used_at"] is None and tokens[0]["expires_at"] is None
    assert server.client(first).get("/api/auth/me").status_code == 200
    # The last use is written after the answer (off the request's path): wait for it, do not race it.
    used = eventually(lambda: (t := admin.get("/api/admin/users/ann/tokens").json()["tokens"][0])["last_used_at"] and t,
                      "the token's last use to be recorded")
    assert used["user"] == "ann"
    assert admin.delete(f"/api/admin/users/root/tokens/{used['id']}").status_code == 404  # not root's token
    resp = admin.delete(f"/api/admin/users/ann/tokens/{used['id']}")
    assert resp.status_code == 200 and resp.json()["id"] == used["id"]
    assert server.client(first).get("/api/auth/me").status_code == 401
    assert admin.delete(f"/api/admin/users/ann/tokens/{2**40}").status_code == 422  # beyond a 32-bit id
    assert audit(server, "token_revoke")[-1].subject == "ann"


def test_an_expired_token_is_refused(server):
    from datetime import timedelta

    from kynsey.accounts.service import get_user, issue_token

    server.add_user("ann", "standard")

    async def short_lived(rt):
        async with rt.sessions() as db:
            return await issue_token(db, await get_user(db, "ann"), name="ci", expires_in=timedelta(microseconds=1))

    resp = server.client(server.call(short_lived)).get("/api/auth/me")
    assert resp.status_code == 401 and resp.json()["error"]["reason"] == "token_expired"


def test_log_out_everywhere_ends_sessions_and_optionally_tokens(server, admin):
    token = server.add_user("ann", "standard", password=PASSWORD)
    pages = [login(server, "ann")[0] for _ in range(2)]
    resp = admin.post("/api/admin/users/ann/logout", json={})
    assert resp.json() == {"sessions": 2, "tokens": 0, "conversations": 0}
    assert all(p.get("/api/auth/me").status_code == 401 for p in pages)
    assert server.client(token).get("/api/auth/me").status_code == 200
    assert admin.post("/api/admin/users/ann/logout", json={"tokens": True}).json()["tokens"] == 1
    assert server.client(token).get("/api/auth/me").status_code == 401
    page, _ = login(server, "ann")  # a user can do it themselves from a session
    csrf = page.get("/api/auth/me").json()["csrf_token"]
    assert page.post("/api/auth/logout-everywhere", headers={"X-CSRF-Token": csrf}).json()["sessions"] == 1
    assert page.get("/api/auth/me").status_code == 401


def test_deleting_a_user_removes_their_conversations_but_not_the_audit_log(server, admin):
    token = server.add_user("ann", "pro", password=PASSWORD)
    ann = server.client(token)
    conversation = ann.post("/api/conversations", json={}).json()["id"]
    replies = collect(ann, "POST", f"/api/conversations/{conversation}/messages", json={"content": "hello"})
    assert replies[-1][0] == "done"
    before = len(audit(server, "switch")) + len(audit(server, "user_add"))
    resp = admin.delete("/api/admin/users/ann")
    assert resp.json() == {"sessions": 0, "tokens": 1, "conversations": 1}
    assert ann.get("/api/auth/me").status_code == 401
    assert (count(server, Conversation), count(server, Message)) == (0, 0)
    assert len(audit(server, "switch")) + len(audit(server, "user_add")) == before  # history stays
    assert audit(server, "user_delete")[-1].subject == "ann"
    assert admin.delete("/api/admin/users/ann").status_code == 404
    assert admin.put("/api/admin/users/bad%00name/plan", json={"plan": "pro"}).status_code == 404


def test_login_runs_argon2_off_the_event_loop(server, monkeypatch):
    import threading

    from kynsey.accounts import secrets

    server.add_user("ann", "standard", password=PASSWORD)
    threads = []
    real = secrets.verify_password
    monkeypatch.setattr(secrets, "verify_password", lambda *a: threads.append(threading.current_thread()) or real(*a))

    async def which(rt):
        return threading.current_thread()

    loop_thread = server.call(which)
    assert login(server, "ann")[1].status_code == 200
    assert threads and all(t is not loop_thread for t in threads)


def test_failed_logins_are_limited_per_account_and_per_address_audited_and_counted(start_server, fake_ollama):
    server = start_server(ollama_host=fake_ollama.url, login_account_limit="3/minute", login_address_limit="5/minute")
    server.add_user("ann", "standard", password=PASSWORD)
    server.add_user("bob", "standard", password=PASSWORD)
    assert [login(server, "ann", "guess")[1].status_code for _ in range(3)] == [401] * 3
    _, refused = login(server, "ann")  # the right password, but the account's window is full
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    assert login(server, "bob")[1].status_code == 200  # another account from the same address
    assert [login(server, "nobody", "guess")[1].status_code for _ in range(3)] == [401, 401, 429]  # address: 5 failures
    assert login(server, "bob")[1].status_code == 429
    failed = [e for e in audit(server, "login") if e.result == "failed"]
    assert [e.subject for e in failed] == ["ann"] * 3 + ["nobody"] * 2 and '"address": "127.0.0.1"' in failed[0].details
    metrics = server.client().get("/metrics").text
    assert 'kynsey_logins_total{result="failed"} 5.0' in metrics
    assert 'kynsey_logins_total{result="rate_limited"} 3.0' in metrics
    assert 'kynsey_logins_total{result="ok"} 1.0' in metrics


def test_a_catalog_reload_that_drops_a_plan_in_use_is_refused_naming_it(start_server, fake_ollama, tmp_path):
    from tests.conftest import OLLAMA_TIERS

    path = tmp_path / "tiers.toml"
    path.write_text(OLLAMA_TIERS.read_text())
    server = start_server(ollama_host=fake_ollama.url, tiers=path)
    admin = server.client(server.add_user("root", "standard", admin=True))
    server.add_user("alice", "pro")
    no_pro = OLLAMA_TIERS.read_text().replace(
        '[plans.pro]\ndisplay_name = "Pro"\ngrants = ["standard", "pro", "code"]', ""
    )
    path.write_text(
        no_pro.replace('requires = "pro"', 'requires = "standard"').replace(
            'requires = "code"', 'requires = "standard"'
        )
    )
    resp = admin.post("/api/admin/catalog/reload")
    error = resp.json()["error"]
    assert resp.status_code == 422 and error["field"] == "plans", resp.text
    assert "plan 'pro' has 1 user(s): alice" in error["message"] and "kynsey user plan NAME PLAN" in error["message"]
    assert admin.get("/api/admin/users").json()["plans"] == ["standard", "pro"]  # still the old catalog
    assert admin.put("/api/admin/users/alice/plan", json={"plan": "standard"}).status_code == 200
    assert admin.post("/api/admin/catalog/reload").status_code == 200
    assert admin.get("/api/admin/users").json()["plans"] == ["standard"]


def test_two_admins_taking_each_others_role_at_once_leave_one(server, admin, monkeypatch):
    """The first change is held after it counted the enabled admins, before it commits, while the second
    runs: the second must count what the first leaves, not what was there before (which left none)."""
    server.add_user("ann", "pro", admin=True)
    keep_an_admin = lifecycle._keep_an_admin
    held = asyncio.Event()
    counted: list[str] = []

    def slow_after_counting(db, user, doing):
        check = keep_an_admin(db, user, doing)

        async def checked() -> None:
            await check()
            counted.append(user.name)
            if len(counted) == 1:
                await held.wait()

        return checked

    monkeypatch.setattr(lifecycle, "_keep_an_admin", slow_after_counting)

    async def work(rt):
        async def demote(name: str):
            async with rt.sessions() as db:
                return await lifecycle.set_admin(db, name, False, actor="test")

        taking = asyncio.create_task(demote("ann"))
        while not counted:  # the first change has counted, and is held before its commit
            await asyncio.sleep(0.01)
        taken = asyncio.create_task(demote("root"))
        await asyncio.sleep(0.3)  # the second change runs as far as it can meanwhile
        held.set()
        return await asyncio.gather(taking, taken, return_exceptions=True)

    ann, root = server.call(work)
    assert not isinstance(ann, BaseException) and ann.is_admin is False
    assert isinstance(root, Conflict) and "last enabled admin" in str(root)
    assert admin.get("/api/admin/users").status_code == 200  # root is still an admin


def test_a_change_that_wrote_before_its_audit_entry_does_not_stall_another(server):
    """A change writes a user's row (on SQLite it then holds the database's write lock, on PostgreSQL
    the row's lock) before it appends its entry, while another change to the same row appends first:
    neither may wait for the other. (An append at the end of the chain that waited for the first
    change's lock, while that change waited in line behind it, stalled both for a timeout, 10 s on
    SQLite and 15 s on PostgreSQL, and the append then failed.)"""
    server.add_user("ann", "pro", password=PASSWORD)
    login(server, "ann")

    async def work(rt):
        async with rt.sessions() as changing, rt.sessions() as other:
            ann = await get_user(changing, "ann")
            ann.password_hash = "reset"
            ended = await end_sessions(changing, ann)  # ann's row and sessions written, not committed
            (await get_user(other, "ann")).plan = "standard"  # written as its entry is appended
            plan_change = AuditRecord(actor="root", action="plan_change", subject="ann", result="ok")
            waiting = asyncio.create_task(append(other, plan_change))
            await asyncio.sleep(0.3)  # the other append goes as far as it can meanwhile
            await append(changing, AuditRecord(actor="root", action="user_passwd", subject="ann", result="ok"))
            await waiting
        async with rt.sessions() as db:
            return ended, (await get_user(db, "ann")).plan, await verify_chain(db)

    ended, plan, report = server.call(work)
    assert ended == 1 and plan == "standard"
    assert report.ok, report
    assert [e.subject for e in audit(server, "user_passwd")] == ["ann"]
    assert [e.subject for e in audit(server, "plan_change")] == ["ann"]


def test_a_user_changes_their_own_password_keeping_this_session(server):
    """F21 "change": the current password is required and guarded as a login is; the session it is changed
    from stays, the user's other sessions end, tokens stay; each attempt is audited."""
    token = server.add_user("ann", "standard", password=PASSWORD)
    page, _ = login(server, "ann")
    other_page, _ = login(server, "ann")
    headers = {"X-CSRF-Token": page.get("/api/auth/me").json()["csrf_token"]}

    def change(current: str, new: str):
        return page.put("/api/auth/password", json={"current_password": current, "password": new}, headers=headers)

    resp = change("not my password", "a brand new secret")
    assert resp.status_code == 403 and resp.json()["error"]["field"] == "current_password", resp.text
    assert change(PASSWORD, "short").status_code == 422
    assert page.put("/api/auth/password", json={"current_password": PASSWORD, "password": "a brand new secret"}
                    ).status_code == 403  # a cookie write without its CSRF token
    resp = change(PASSWORD, "a brand new secret")
    assert resp.status_code == 200 and resp.json() == {"sessions": 1, "tokens": 0, "conversations": 0}, resp.text
    assert page.get("/api/auth/me").status_code == 200  # this session stays
    assert other_page.get("/api/auth/me").status_code == 401  # the other one ended at once
    assert server.client(token).get("/api/auth/me").status_code == 200  # tokens stay
    assert login(server, "ann")[1].status_code == 401
    assert login(server, "ann", "a brand new secret")[1].status_code == 200
    entries = audit(server, "user_passwd")
    assert [(e.actor, e.result) for e in entries] == [("ann", "failed"), ("ann", "ok")]
    assert entries[-1].details == '{"own": true, "sessions_ended": 1}'


def test_wrong_current_passwords_count_as_failed_logins(server):
    """Changing a password cannot be used to guess the current one past the failed-login limit."""
    token = server.add_user("ann", "standard", password=PASSWORD)
    client = server.client(token)
    codes = [client.put("/api/auth/password", json={"current_password": f"guess number {n}", "password": "whatever123"}
                        ).status_code for n in range(7)]
    assert codes[:5] == [403] * 5 and codes[5:] == [429, 429], codes  # 5/minute per account in the tests' settings
    assert login(server, "ann")[1].status_code == 429  # the same count as logins
    api_only = server.client(server.add_user("bot", "standard"))
    resp = api_only.put("/api/auth/password", json={"current_password": "anything", "password": "whatever123"})
    assert resp.status_code == 409 and "no password" in resp.json()["error"]["message"]
