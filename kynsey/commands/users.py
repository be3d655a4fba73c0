"""``kynsey user ...`` and ``kynsey token ...``: accounts from creation to removal (SPEC F15, F21).

Each command calls one accounts service function, the one the admin API calls,
so both keep the same rules and write the same audit entries (actor ``cli``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from kynsey.commands.common import (
    ACTOR,
    fail,
    in_session,
    load_catalog_or_fail,
    load_settings,
    read_password,
    stdin_is_terminal,
)
from kynsey.errors import KynseyError

user_app = typer.Typer(
    help="Users: create, plans, passwords, disable, delete, admin role, API tokens.", no_args_is_help=True
)
token_app = typer.Typer(help="API tokens: list a user's, revoke one.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="The user's name.")]


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


@user_app.command("add")
def user_add(
    name: Name,
    plan: Annotated[str, typer.Option(help="Plan from the catalog (e.g. standard, pro).")],
    admin: Annotated[bool, typer.Option("--admin", help="Give the user the admin role.")] = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="No password: the user signs in with API tokens only.")
    ] = False,
) -> None:
    """Create a user. At a terminal the password is asked twice (hidden); piped, it is read from standard input."""
    from kynsey.accounts.service import check_name, check_plan, create_user

    settings = load_settings()
    try:  # before asking for a password that could not be used
        check_name(name)
        check_plan(load_catalog_or_fail(settings), plan)
    except KynseyError as exc:
        fail(exc.message)
    password = None if no_password else read_password(prompt=f"Password for {name}", required=False)

    user = in_session(
        settings,
        lambda session, db: create_user(session, db.plans, name, plan, password=password, admin=admin, actor=ACTOR),
        catalog=True,
    )
    extras = (", admin" if user.is_admin else "") + (
        ", with password" if password else ", no password: API tokens only"
    )
    typer.echo(f"created user {user.name} (plan {user.plan}{extras})")


@user_app.command("passwd")
def user_passwd(name: Name) -> None:
    """Set NAME's password (asked twice at a terminal, else read from standard input); their browser sessions end."""
    from kynsey.accounts.lifecycle import set_password

    settings = load_settings()
    password = read_password(prompt=f"New password for {name}", required=True) or ""  # required: never empty

    removed = in_session(settings, lambda session, db: set_password(session, name, password, actor=ACTOR))
    typer.echo(f"{name}: password set; {removed.sessions} browser session(s) ended")


def _set_disabled(name: str, disabled: bool) -> None:
    from kynsey.accounts.lifecycle import set_disabled

    in_session(load_settings(), lambda session, db: set_disabled(session, name, disabled, actor=ACTOR))
    typer.echo(f"{name}: {'disabled (no login, tokens refused, sessions ended)' if disabled else 'enabled'}")


@user_app.command("disable")
def user_disable(name: Name) -> None:
    """Disable NAME: no login, their tokens are refused and their sessions end (until enabled)."""
    _set_disabled(name, True)


@user_app.command("enable")
def user_enable(name: Name) -> None:
    """Enable NAME again (their API tokens work again)."""
    _set_disabled(name, False)


@user_app.command("delete")
def user_delete(
    name: Name, yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False
) -> None:
    """Delete NAME with their conversations, tokens and sessions; the audit log keeps its entries."""
    from kynsey.accounts.lifecycle import delete_user

    if not yes:
        if not stdin_is_terminal():
            fail("deleting a user also deletes their conversations: add --yes to confirm", 2)
        typer.confirm(f"Delete {name} with all their conversations?", abort=True)

    removed = in_session(load_settings(), lambda session, db: delete_user(session, name, actor=ACTOR))
    typer.echo(
        f"deleted {name}: {removed.conversations} conversation(s), {removed.tokens} token(s), {removed.sessions} session(s)"
    )


@user_app.command("admin")
def user_admin(name: Name, state: Annotated[str, typer.Argument(help="'on' or 'off'.")]) -> None:
    """Give NAME the admin role (on) or take it away (off)."""
    from kynsey.accounts.lifecycle import set_admin

    if state not in ("on", "off"):
        fail(f"the state is 'on' or 'off', not '{state}'", 2)

    user = in_session(load_settings(), lambda session, db: set_admin(session, name, state == "on", actor=ACTOR))
    typer.echo(f"{name}: {'admin' if user.is_admin else 'not an admin'}")


@user_app.command("logout")
def user_logout(
    name: Name, tokens: Annotated[bool, typer.Option("--tokens", help="Also revoke every API token of NAME.")] = False
) -> None:
    """Log NAME out everywhere: end every browser session (and with --tokens, revoke their API tokens)."""
    from kynsey.accounts.lifecycle import log_out_everywhere

    removed = in_session(
        load_settings(), lambda session, db: log_out_everywhere(session, name, actor=ACTOR, tokens=tokens)
    )
    typer.echo(f"{name}: {removed.sessions} browser session(s) ended, {removed.tokens} API token(s) revoked")


@user_app.command("token")
def user_token(
    name: Name,
    label: Annotated[str, typer.Option("--name", help="What the token is for (shown by 'token list').")] = "",
    expires: Annotated[
        float | None, typer.Option(help="Days until the token stops working (default: never).", min=0.0)
    ] = None,
) -> None:
    """Print a new API token for NAME (shown once; stored hashed)."""
    from kynsey.accounts.service import get_user, issue_token

    lifetime = timedelta(days=expires) if expires is not None else None

    async def issue(session, db):
        return await issue_token(session, await get_user(session, name), name=label, expires_in=lifetime, actor=ACTOR)

    typer.echo(in_session(load_settings(), issue))


@user_app.command("plan")
def user_plan(name: Name, plan: Annotated[str, typer.Argument(help="A plan the catalog declares.")]) -> None:
    """Change NAME's plan (audited)."""
    from kynsey.accounts.service import change_plan

    old = in_session(
        load_settings(), lambda session, db: change_plan(session, db.plans, name, plan, actor=ACTOR), catalog=True
    )
    typer.echo(f"{name}: plan {old} -> {plan}")


@user_app.command("list")
def user_list() -> None:
    """List users with their plans, roles and state."""
    from kynsey.accounts.service import list_users

    for user in in_session(load_settings(), lambda session, db: list_users(session)):
        state = " ".join(
            word for word, on in (("admin", user.is_admin), ("disabled", user.disabled_at is not None)) if on
        )
        typer.echo(f"{user.name:24} {user.plan:12} {state}".rstrip())


@token_app.command("list")
def token_list(name: Name) -> None:
    """List NAME's API tokens: id, name, created, last used, expiry (never the token itself)."""
    from kynsey.accounts.service import get_user
    from kynsey.accounts.tokens import list_tokens

    async def listing(session, db):
        return await list_tokens(session, await get_user(session, name))

    found = in_session(load_settings(), listing)
    if not found:
        typer.echo(f"{name} has no API tokens")
        return
    typer.echo(f"{'ID':>6}  {'NAME':20} {'CREATED':16}  {'LAST USED':16}  EXPIRES")
    for token in found:
        expires = _when(token.expires_at) + (" (expired)" if token.expired else "")
        typer.echo(
            f"{token.id:>6}  {token.name or '-':20} {_when(token.created_at):16}  {_when(token.last_used_at):16}  {expires}"
        )


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[
        int, typer.Argument(help="The token's id (see 'kynsey token list NAME').", min=1, max=2**31 - 1)
    ],
) -> None:
    """Revoke one API token: it stops working at the next request."""
    from kynsey.accounts.tokens import revoke_token

    info = in_session(load_settings(), lambda session, db: revoke_token(session, token_id, actor=ACTOR))
    typer.echo(f"revoked token {info.id} ({info.name or 'unnamed'}) of {info.user}")
