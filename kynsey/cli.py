"""The `kynsey` command (SPEC F15).

Commands live in ``kynsey.commands``; this module assembles them. Each command
imports what it needs when it runs, so ``kynsey settings`` or ``kynsey user
list`` do not load the web app, the backends or Alembic (SPEC N7: < 0.5 s).
Errors are ``error: ...`` on standard error, exit status 1 (2 for a bad
catalog, setting or argument).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from kynsey.commands.common import ACTOR, fail, load_settings, with_db
from kynsey.commands.users import token_app, user_app
from kynsey.errors import CatalogError, KynseyError
from kynsey.settings import Settings

app = typer.Typer(help="Kynsey: serve several local models to many users, switched by tier.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail: export it, verify its hash chain.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")

TiersOpt = Annotated[Path | None, typer.Option("--tiers", help="Tier catalog TOML (default: KYNSEY_TIERS or built-in).")]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    tiers: TiersOpt = None,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Processes serving the port (default: KYNSEY_WORKERS, 1); more need PostgreSQL and Redis.")] = None,
) -> None:
    """Run the service (migrates the database first)."""
    from kynsey.commands.serve import serve as run_service

    run_service(load_settings(tiers=tiers, workers=workers), host, port)


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


@app.command("tiers")
def tiers_command(
    tiers: TiersOpt = None,
    url: Annotated[str | None, typer.Option(help="The running Kynsey to ask (default: KYNSEY_URL).")] = None,
    token: Annotated[str | None, typer.Option(help="API token for --url (default: KYNSEY_API_TOKEN); an admin's shows more.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Probe the backends from here instead of asking the server.")] = False,
) -> None:
    """The catalog with each tier's live status: the running server's, else probed from here."""
    from kynsey.commands.tiers import tiers_command as show_tiers

    show_tiers(tiers, url, token, local)


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

    async def work(db):
        from kynsey.metrics import Metrics
        from kynsey.rollout.flags import Flags

        flags = Flags(db.sessions, ttl=0, metrics=Metrics())  # this process only: no cache, no guard
        if state is None and percent is None and allowlist is None:
            return await flags.reload(name)
        return await flags.set(name, actor=ACTOR, state=state, percent=percent, allow=allowlist)

    typer.echo(_flag_text(with_db(load_settings(), work)))


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
    import asyncio
    from contextlib import nullcontext

    from kynsey.audit.export import check_format, export_chunks
    from kynsey.audit.query import AuditFilter
    from kynsey.storage.models import as_utc

    try:
        check_format(format)
    except KynseyError as exc:
        fail(exc.message, 2)
    try:
        since, until = as_utc(since), as_utc(until)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 once in UTC
        fail("--since and --until must be moments after 0001-01-01 in UTC", 2)
    where = AuditFilter(user=user, tier=tier, result=result, action=action, since=since, until=until)

    async def work(db):
        # Opened here, so that a file that cannot be written is an `error: ...` like a database fault.
        target = await asyncio.to_thread(open, output, "w", encoding="utf-8", newline="") if output else nullcontext(sys.stdout)
        with target as out:
            async with db.sessions() as session:
                async for chunk in export_chunks(session, where, format):
                    out.write(chunk)

    with_db(load_settings(), work, migrate=False)
    if output:
        typer.echo(f"audit trail written to {output}", err=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit hash chain; exit 1 naming the first altered or removed entry."""
    from kynsey.audit.verify import verify_chain

    async def work(db):
        async with db.sessions() as session:
            return await verify_chain(session)

    report = with_db(load_settings(), work, migrate=False)
    typer.echo(report.message)
    if not report.ok:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
