"""The typed responses (kynsey/web/schemas.py): each route answers exactly what its service
returns, nothing dropped by the response model, and the OpenAPI document types every JSON answer.

The services build dicts; a route declares their shape. The services are called here
directly, on the server's own loop, and their dicts compared with what the route sent:
a field the service returns that the schema forgot would be missing from the route's JSON.
"""

from __future__ import annotations

import json
from typing import Any

from kynsey.accounts import service as accounts
from kynsey.audit.query import AuditFilter, entry_public, recent
from kynsey.audit.verify import verify_chain
from kynsey.chat import conversations
from kynsey.rollout.dashboard import dashboard
from kynsey.rollout.flags import FLAG
from kynsey.switching.listing import list_tiers
from tests.sse import collect

# Untyped on purpose: their per-host fields are changing (issue 13), or they speak another API's
# shapes (/v1, /ollama), or they answer text (/metrics, audit export, event streams).
UNTYPED = {"/api/models/status", "/api/catalog/status", "/metrics", "/api/admin/audit/export"}
UNTYPED_PREFIXES = ("/v1/", "/ollama/", "/api/tags", "/api/chat", "/api/generate", "/api/show", "/api/ps", "/api/version")


def shape(value: Any) -> Any:
    """The keys of ``value``, all the way down (a list of objects: the shape of its first)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value and isinstance(value[0], dict) else "list"
    return None


def plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_every_json_route_has_a_typed_success_response(server):
    doc = server.client().get("/openapi.json").json()
    untyped, typed = [], 0
    for path, operations in doc["paths"].items():
        if path in UNTYPED or path.startswith(UNTYPED_PREFIXES):
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if schema == {}:
                    untyped.append(f"{method.upper()} {path} {status}")
                elif schema is not None:
                    typed += 1
    assert untyped == []
    assert typed >= 30  # the walk found the routes (a renamed document must not make this pass empty)
    components = doc["components"]["schemas"]
    for name in ("ConversationViewPublic", "MessageVersionPublic", "TierListPublic", "FlagPublic",
                 "AuditEntryPublic", "AdminUserListPublic", "DashboardPublic"):
        assert components[name]["properties"], name


def test_chat_routes_answer_every_field_their_services_return(server):
    alice = server.client(server.add_user("alice", "pro"))
    created = alice.post("/api/conversations", json={"title": "first"})
    assert created.status_code == 201
    cid = created.json()["id"]
    reply = collect(alice, "POST", f"/api/conversations/{cid}/messages", json={"content": "hello there"})
    mid = next(d for name, d in reply if name == "start")["message_id"]

    async def services(rt):
        async with rt.sessions() as db:
            user = await accounts.get_user(db, "alice")
            return (await conversations.listing(db, user, None), await conversations.listing(db, user, "hello"),
                    await conversations.shown(db, rt.live, user, cid))

    listing, found, shown = server.call(services)
    assert alice.get("/api/conversations").json() == {"conversations": plain(listing)}
    searched = alice.get("/api/conversations", params={"q": "hello"}).json()
    assert searched == {"conversations": plain(found)} and "snippet" in searched["conversations"][0]
    assert "snippet" not in alice.get("/api/conversations").json()["conversations"][0]
    view = alice.get(f"/api/conversations/{cid}").json()
    assert view == plain(shown)
    assert shape(view["messages"][1]) == shape(plain(shown["messages"][1]))  # the version fields too

    renamed = alice.patch(f"/api/conversations/{cid}", json={"title": "renamed"}).json()
    assert shape(renamed) == shape(plain(listing[0])) and renamed["title"] == "renamed"
    assert shape(alice.post(f"/api/conversations/{cid}/messages/{mid}/show").json()) == shape(view)
    stop = alice.post(f"/api/conversations/{cid}/messages/{mid}/stop").json()
    assert stop["stopped"] is False
    assert shape(stop["message"]) == {k: v for k, v in shape(view["messages"][1]).items()
                                      if k not in ("parent_id", "version", "versions", "sibling_ids")}


def test_tier_and_operator_routes_answer_every_field_their_services_return(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    alice = server.client(server.add_user("alice", "standard"))
    assert alice.post("/api/models/tier", json={"tier": "pro"}).status_code == 403  # an audit entry with details

    async def services(rt):
        async with rt.sessions() as db:
            user = await accounts.get_user(db, "alice")
            tiers = list_tiers(rt, user, switching=await rt.flags.enabled_for(user))
            entries = [entry_public(e) for e in await recent(db, AuditFilter(), limit=100)]
            return tiers, entries, (await rt.flags.reload(FLAG)).public(), (await verify_chain(db)).public(), \
                await dashboard(rt, db)

    tiers, entries, flag, chain, board = server.call(services)
    assert alice.get("/api/models/tiers").json() == plain(tiers)
    assert any(t["upgrade"] for t in tiers["tiers"]) and any(t["upgrade"] is None for t in tiers["tiers"])
    audit = admin.get("/api/admin/audit").json()
    assert audit["entries"] == plain(entries) and any(e["details"] for e in entries)
    assert admin.get("/api/admin/flags/model_switching").json() == plain(flag)
    assert admin.get("/api/admin/audit/verify").json() == plain(chain)
    put = admin.put("/api/admin/flags/model_switching", json={"state": "percentage", "percent": 50, "allow": ["alice"]})
    assert put.json().keys() == flag.keys() and put.json()["allow"] == ["alice"]
    got = admin.get("/api/admin/dashboard").json()
    assert shape(got) == shape(plain(board)) and shape(got["guard"]) == shape(plain(board["guard"]))

    users = admin.get("/api/admin/users").json()
    assert {u["name"] for u in users["users"]} == {"root", "alice"} and users["plans"]
    assert set(users["users"][0]) == {"name", "plan", "is_admin", "active_tier", "disabled", "created_at", "tokens"}
    assert alice.post("/api/models/warm", json={"tier": "standard"}).json().keys() == {"tier", "status"}
    assert admin.post("/api/models/standard/unload").json().keys() == {"tier", "status", "waited_s"}
    assert admin.post("/api/admin/catalog/reload").json().keys() == {"source", "tiers", "rebuilt_backends"}
    assert alice.get("/healthz").json() == {"status": "ok"}
    ready = alice.get("/readyz").json()
    assert ready["ready"] is True and ready["checks"]["database"] == {"ok": True}
