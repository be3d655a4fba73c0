"""What every ``kynsey`` command shares: clean failures, settings, and a light database context.

Commands answer within half a second (SPEC N7), so nothing heavy is imported
at module level, and a command that only reads or writes rows opens the
database alone, not a whole runtime with backends, monitors and limiters.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer
from pydantic import ValidationError

from kynsey.errors import CatalogError, KynseyError
from kynsey.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from kynsey.catalog import Catalog

T = TypeVar("T")
ACTOR = "cli"  # the audit log's actor for every change made from the command line


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def load_settings(**overrides) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"bad setting {'.'.join(map(str, err['loc'])) or ''}: {err['msg']}", 2)


def load_catalog_or_fail(settings: Settings) -> Catalog:
    from kynsey.catalog import load_catalog

    try:
        return load_catalog(settings.tiers)
    except CatalogError as exc:
        fail(str(exc), 2)


@dataclass
class Db:
    """A command's database: sessions, and the catalog when the command needs plans."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    catalog: Catalog | None = None

    @property
    def plans(self) -> Catalog:
        """The catalog, for a command run with ``catalog=True``."""
        if self.catalog is None:
            raise RuntimeError("this command did not ask for the catalog (catalog=True)")
        return self.catalog


def with_db(
    settings: Settings, work: Callable[[Db], Awaitable[T]], *, catalog: bool = False, migrate: bool = True
) -> T:
    """Run ``work(db)`` against the settings' database (migrated to head first when behind),
    turning domain and connection errors into ``error: ...`` and exit 1 (2: bad catalog)."""
    from sqlalchemy.exc import SQLAlchemyError

    loaded = load_catalog_or_fail(settings) if catalog else None

    async def main() -> T:
        from kynsey.storage.db import make_engine, make_sessionmaker
        from kynsey.storage.revision import ensure_head

        engine = make_engine(settings.effective_database_url)
        try:
            if migrate:
                await ensure_head(engine, settings.effective_database_url)
            return await work(Db(settings, make_sessionmaker(engine), loaded))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except CatalogError as exc:
        fail(str(exc), 2)
    except KynseyError as exc:
        fail(exc.message)
    except (SQLAlchemyError, ConnectionError, TimeoutError, socket.gaierror) as exc:  # asyncpg raises the raw OS errors
        fail(database_failure(settings, exc))
    except OSError as exc:  # e.g. an --output file that cannot be written
        fail(f"{type(exc).__name__}: {exc}")


def in_session(
    settings: Settings, call: Callable[[AsyncSession, Db], Awaitable[T]], *, catalog: bool = False, migrate: bool = True
) -> T:
    """``with_db`` for the common case: one session, one service call."""

    async def work(db: Db) -> T:
        async with db.sessions() as session:
            return await call(session, db)

    return with_db(settings, work, catalog=catalog, migrate=migrate)


def database_failure(settings: Settings, exc: Exception) -> str:
    first_line = (str(exc).splitlines() or [""])[0][:300]
    return f"the database does not answer ({database_hint(settings)}): {type(exc).__name__}: {first_line}"


def database_hint(settings: Settings) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(settings.effective_database_url).render_as_string(hide_password=True)
    except ArgumentError:  # say so rather than echo it: it may hold a password
        return "KYNSEY_DATABASE_URL is not a valid URL"


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def read_password(*, prompt: str, required: bool) -> str | None:
    """On a terminal: ask twice, hidden. Piped: the first line of standard input."""
    if stdin_is_terminal():
        return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)
    text = sys.stdin.readline().rstrip("\r\n") if sys.stdin is not None else ""
    if not text and required:
        fail("no password on standard input (pipe one in, or run this at a terminal to be asked)")
    return text or None
