"""``kynsey tiers``: the catalog with live status, as the running server sees it.

By default it asks the server at ``--url`` (``KYNSEY_URL``) for
``/api/catalog/status``: that is the catalog actually served, with the status
the service acts on. When no server answers there, or with ``--tiers FILE`` or
``--local``, it loads the catalog here and probes its backends itself. Either
way its first line says which catalog it shows and where the status came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kynsey.commands.common import fail, load_catalog_or_fail, load_settings
from kynsey.errors import CatalogError
from kynsey.settings import Settings

CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 10.0


def ask_server(url: str, token: str | None) -> dict[str, Any] | None:
    """The server's view; None when nothing listens at ``url``."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = httpx.get(
            url.rstrip("/") + "/api/catalog/status",
            headers=headers,
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        )
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return None
    except httpx.HTTPError as exc:
        fail(f"the server at {url} did not answer properly: {type(exc).__name__}: {exc}")
    if resp.status_code == 401:
        fail(
            f"the server at {url} refused the API token (KYNSEY_API_TOKEN / --token): {resp.json()['error']['message']}"
        )
    if resp.status_code != 200 or "tiers" not in (body := resp.json()):
        fail(f"{url} answered HTTP {resp.status_code} to /api/catalog/status: is it a Kynsey of this version?")
    return body


def probe_here(settings: Settings) -> dict[str, Any]:
    """Load the catalog here, probe its backends, and read which users are on which plan."""
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from kynsey.accounts.service import plans_in_use
    from kynsey.runtime import build_runtime
    from kynsey.switching.overview import overview

    catalog = load_catalog_or_fail(settings)

    async def work() -> dict[str, Any]:
        rt = build_runtime(settings, catalog)
        try:
            await rt.monitor.refresh()
            try:
                async with rt.sessions() as db:
                    users = await plans_in_use(db)
            except (SQLAlchemyError, OSError):
                users = None  # a database not made yet: the status is still worth showing
            return overview(rt, detail=True, plan_users=users)
        finally:
            await rt.aclose()

    try:
        return asyncio.run(work())
    except CatalogError as exc:
        fail(str(exc), 2)


def host_line(host: dict[str, Any]) -> str:
    """One host: its number (and URL for admins), health, what it holds and how busy it is."""
    name = f"{host.get('label') or 'host ' + str(host['host'])}" + (f" {host['url']}" if host.get("url") else "")
    if not host["reachable"]:
        return f"{name}: DOWN: {host['error']}"
    version = f", version {host['version']}" if host.get("version") else ""
    held = ", ".join(host.get("loaded") or []) or "nothing"
    capacity = f" of {host['capacity']}" if host.get("capacity") else ""
    breaker = f"; breaker {host['breaker']}" if host.get("breaker", "closed") != "closed" else ""
    return (f"{name}: up{version}, {host['latency_ms']} ms; holds {held}"
            f" ({len(host.get('loaded') or [])}{capacity}); {host.get('streaming', 0)} streaming{breaker}")


def show(view: dict[str, Any], origin: str) -> None:
    echo = typer.echo
    echo(f"catalog {view['source']}, default tier {view['default_tier']}: {origin}")
    plans = [
        f"{p['plan']} ({', '.join(p['grants'])}" + (f"; {p['users']} user(s))" if "users" in p else ")")
        for p in view["plans"]
    ]
    echo(f"plans: {'; '.join(plans)}")
    for backend in view["backends"]:
        hosts = backend.get("hosts")
        if not hosts:
            echo(f"backend {backend['name']} ({backend['kind']}): {'up' if backend['reachable'] else 'DOWN'}")
        for host in hosts or []:
            echo(f"backend {backend['name']} ({backend['kind']}) {host_line(host)}")
    echo(f"{'TIER':10} {'NAME':12} {'MODEL':32} {'STATUS':12} {'SIZE':>10}  DETAIL")
    for tier in view["tiers"]:
        size = f"{tier['size'] / 1e9:.2f} GB" if tier["size"] else "-"
        detail = tier.get("reason") or tier["meaning"]
        if tier.get("file"):
            detail = f"{tier['file']} ({'loaded' if tier['loaded'] else 'not loaded'})"
        fallback = f"; falls back to {', '.join(tier['fallback'])}" if tier["fallback"] else ""
        echo(
            f"{tier['tier']:10} {tier['display_name']:12} {tier['model']:32} {tier['status']:12} {size:>10}  {detail}{fallback}"
        )
    for plan, names in (view.get("users_on_missing_plans") or {}).items():
        echo(
            f"WARNING: this catalog lacks plan '{plan}', which {len(names)} user(s) are on ({', '.join(names[:10])}): "
            "Kynsey refuses to run or reload it until they are moved (kynsey user plan NAME PLAN)"
        )
    if not view["detail"]:
        echo(
            "(host addresses and status reasons are shown to admins: pass an admin's token with --token or KYNSEY_API_TOKEN)"
        )


def tiers_command(tiers: Path | None, url: str | None, token: str | None, local: bool) -> None:
    settings = load_settings(tiers=tiers, url=url, api_token=token)
    if tiers is None and not local:
        view = ask_server(settings.url, settings.api_token)
        if view is not None:
            show(view, f"as served by the Kynsey at {settings.url} (its live status)")
            return
        origin = f"no Kynsey answers at {settings.url}, so this is probed from here (start it, or pass --url)"
    else:
        origin = "probed from here, not asked of a running server" + (" (--tiers)" if tiers else " (--local)")
    show(probe_here(settings), origin)
