"""The `kynsey` command (SPEC F15)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from kynsey.errors import CatalogError, KynseyError
from kynsey.settings import Settings

T = TypeVar("T")

app = typer.Typer(help="Kynsey: serve several local models to many users, switched by tier.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
user_app = typer.Typer(help="Users, plans and API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
audit_app = typer.Typer(help="The audit trail: export it, verify its hash chain.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

TiersOpt = Annotated[Path | None, typer.Option("--tiers", help="Tier catalog TOML (default: KYNSEY_TIERS or built-in).")]


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_settings(**overrides) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"bad setting {'.'.join(map(str, err['loc'])) or ''}: {err['msg']}", 2)


def run(settings: Settings, work: Callable[..., Awaitable[T]], *, migrate: bool = True) -> T:
    """Run ``work(runtime)`` with a runtime, turning domain errors into clean exits."""
    from kynsey.runtime import build_runtime
    from kynsey.storage.migrate import upgrade

    async def main() -> T:
        rt = build_runtime(settings)
        try:
            return await work(rt)
        finally:
            await rt.aclose()

    try:
        if migrate:
            upgrade(settings.effective_database_url)
        return asyncio.run(main())
    except CatalogError as exc:
        fail(str(exc), 2)
    except KynseyError as exc:
        fail(exc.message)
    except OSError as exc:
        fail(f"{type(exc).__name__}: {exc}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    tiers: TiersOpt = None,
) -> None:
    """Run the service (migrates the database first)."""
    from kynsey.catalog import load_catalog
    from kynsey.logs import setup_logging
    from kynsey.storage.migrate import upgrade
    from kynsey.web.server import server

    settings = load_settings(tiers=tiers)
    try:
        load_catalog(settings.tiers)
        upgrade(settings.effective_database_url)
    except CatalogError as exc:
        fail(str(exc), 2)
    setup_logging(settings.log_level)
    server(settings, host, port).run()


@app.command("check-catalog")
def check_catalog(path: Annotated[Path, typer.Argument(help="The tier catalog TOML to check.")]) -> None:
    """Validate a tier catalog file without starting anything."""
    from kynsey.catalog import load_catalog

    try:
        catalog = load_catalog(path)
    except CatalogError as exc:
        fail(str(exc), 2)
    typer.echo(f"{path}: valid: tiers {', '.join(catalog.tiers)}; plans {', '.join(catalog.plans)}")


@app.command("settings")
def show_settings(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table (the README's).")] = False,
) -> None:
    """Print every setting with its default and meaning."""
    if markdown:
        typer.echo("| variable | default | meaning |\n|---|---|---|")
    for env, default, help_text in Settings.describe():
        typer.echo(f"| `{env}` | `{default}` | {help_text} |" if markdown else f"{env:32} {default:28} {help_text}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Migrate the database to the newest revision."""
    from kynsey.storage.migrate import upgrade

    settings = load_settings()
    upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at {revision}: {settings.effective_database_url}")


def _read_password() -> str | None:
    if sys.stdin is None or sys.stdin.isatty():
        return None
    text = sys.stdin.read().rstrip("\r\n")
    return text or None


@user_app.command("add")
def user_add(
    name: str,
    plan: Annotated[str, typer.Option(help="Plan from the catalog (e.g. standard, pro).")],
    admin: Annotated[bool, typer.Option("--admin", help="Give the user the admin role.")] = False,
) -> None:
    """Create a user; a password is read from standard input when one is piped in."""
    from kynsey.accounts.service import create_user
    from kynsey.audit import AuditRecord, append

    password = _read_password()

    async def work(rt):
        async with rt.sessions() as db:
            user = await create_user(db, rt.catalog, name, plan, password=password, admin=admin)
            await append(db, AuditRecord(actor="cli", action="user_add", subject=name, result="ok", details={"plan": plan, "admin": admin}))
            return user

    user = run(load_settings(), work)
    typer.echo(f"created user {user.name} (plan {user.plan}{', admin' if user.is_admin else ''}{', with password' if password else ''})")


@user_app.command("token")
def user_token(name: str) -> None:
    """Print a new API token for NAME."""
    from kynsey.accounts.service import get_user, issue_token

    async def work(rt):
        async with rt.sessions() as db:
            token = await issue_token(db, await get_user(db, name))
            await db.commit()
            return token

    typer.echo(run(load_settings(), work))


@user_app.command("plan")
def user_plan(name: str, plan: str) -> None:
    """Change NAME's plan (audited)."""
    from kynsey.accounts.service import change_plan

    async def work(rt):
        async with rt.sessions() as db:
            return await change_plan(db, rt.catalog, name, plan, actor="cli")

    old = run(load_settings(), work)
    typer.echo(f"{name}: plan {old} -> {plan}")


@user_app.command("list")
def user_list() -> None:
    """List users with their plans."""
    from kynsey.accounts.service import list_users

    async def work(rt):
        async with rt.sessions() as db:
            return await list_users(db)

    for user in run(load_settings(), work):
        typer.echo(f"{user.name:24} {user.plan:12} {'admin' if user.is_admin else ''}")


@app.command("tiers")
def tiers_command(tiers: TiersOpt = None) -> None:
    """Print the catalog with each tier's live status."""
    from kynsey.switching.listing import status_report

    async def work(rt):
        await rt.monitor.refresh()
        return rt.catalog, status_report(rt, admin=True)

    catalog, report = run(load_settings(tiers=tiers), work, migrate=False)
    for backend in report["backends"]:
        for host in backend["hosts"]:
            state = f"up, version {host['version']}, {host['latency_ms']} ms" if host["reachable"] else f"DOWN: {host['error']}"
            typer.echo(f"backend {backend['name']} ({backend['kind']}) {host['url']}: {state}")
    typer.echo(f"{'TIER':10} {'NAME':12} {'MODEL':32} {'STATUS':12} {'SIZE':>10}  DETAIL")
    for model in report["models"]:
        tier = catalog.tiers[model["tier"]]
        size = f"{model['size'] / 1e9:.2f} GB" if model["size"] else "-"
        detail = f"{model['file']} ({'loaded' if model['loaded'] else 'not loaded'})" if model["file"] else model["reason"]
        typer.echo(f"{tier.tier:10} {tier.display_name:12} {model['model']:32} {model['status']:12} {size:>10}  {detail}")


def _flag_text(flag) -> str:
    lines = [flag.describe(), f"  state {flag.state}, percent {flag.percent:g}, allow: {', '.join(flag.allow) or '-'}"]
    if flag.stored:
        lines.append(f"  changed {flag.updated_at:%Y-%m-%d %H:%M:%S} UTC by {flag.updated_by}")
    else:
        lines.append("  (no stored state: on for everyone by default)")
    if flag.last_rollback:
        active = " - KILL SWITCH ACTIVE until an admin turns it back on" if flag.killed else ""
        lines.append(f"  last automatic rollback {flag.last_rollback['at']}{active}: {flag.last_rollback['reason']}")
    return "\n".join(lines)


@app.command("flag")
def flag_command(
    name: Annotated[str, typer.Argument(help="The flag: model_switching.")],
    state: Annotated[str | None, typer.Argument(help="'on' or 'off'; omit both this and the options to show the flag.")] = None,
    percent: Annotated[float | None, typer.Option(help="On for this share of users, 0-100 (sticky as it grows).")] = None,
    allow: Annotated[str | None, typer.Option(help="Comma-separated user names always in; replaces the list ('' empties it).")] = None,
) -> None:
    """Show or change a feature flag (every change is audited as action 'flag')."""
    if state not in (None, "on", "off"):
        fail(f"the state is 'on' or 'off' (use --percent for a rollout), not '{state}'", 2)
    allowlist = None if allow is None else [n for n in allow.split(",") if n.strip()]

    async def work(rt):
        if state is None and percent is None and allowlist is None:
            return await rt.flags.reload(name)
        return await rt.flags.set(name, actor="cli", state=state, percent=percent, allow=allowlist)

    typer.echo(_flag_text(run(load_settings(), work)))


FilterOpt = Annotated[str | None, typer.Option(help="Only entries matching this value.")]
WhenOpt = Annotated[datetime | None, typer.Option(help="UTC time, e.g. 2025-01-31 or 2025-01-31T08:00:00.")]


@audit_app.command("export")
def audit_export(
    format: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    user: FilterOpt = None,
    tier: FilterOpt = None,
    result: FilterOpt = None,
    action: FilterOpt = None,
    since: WhenOpt = None,
    until: WhenOpt = None,
    output: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
) -> None:
    """Export the audit trail, oldest first, with every column (hashes included)."""
    from contextlib import nullcontext

    from kynsey.audit.export import check_format, export_chunks
    from kynsey.storage.models import as_utc
    from kynsey.audit.query import AuditFilter

    try:
        check_format(format)
    except KynseyError as exc:
        fail(exc.message, 2)
    where = AuditFilter(user=user, tier=tier, result=result, action=action, since=as_utc(since), until=as_utc(until))

    async def work(rt):
        target = open(output, "w", encoding="utf-8", newline="") if output else nullcontext(sys.stdout)
        with target as out:
            async with rt.sessions() as db:
                async for chunk in export_chunks(db, where, format):
                    out.write(chunk)

    run(load_settings(), work, migrate=False)
    if output:
        typer.echo(f"audit trail written to {output}", err=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit hash chain; exit 1 naming the first altered or removed entry."""
    from kynsey.audit.verify import verify_chain

    async def work(rt):
        async with rt.sessions() as db:
            return await verify_chain(db)

    report = run(load_settings(), work, migrate=False)
    typer.echo(report.message)
    if not report.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
