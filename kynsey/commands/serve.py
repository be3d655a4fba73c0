"""``kynsey serve``: check everything a start needs, then run the service.

Every start-up failure an operator can cause ends as ``error: ...`` on standard
error with exit status 2 (a bad setting or catalog) or 1 (something that does
not answer or is taken), before the service logs a line:
- the settings and the catalog (including plans users are on),
- the database URL, the database itself and its migrations,
- Redis, when ``KYNSEY_REDIS_URL`` is set: a bad URL stops the start; a Redis that
  does not answer only warns, since rate limits fail open to memory while it is down,
- the listening address (bound here, before the application starts, so a port
  in use is not found after "Application startup complete"),
- with ``--workers N`` (N > 1), whatever one process holds and N processes would
  silently split N ways (``check_workers``): refused, with what to do instead.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
import sys
from typing import TYPE_CHECKING

from kynsey.commands.common import database_failure, database_hint, fail, load_catalog_or_fail
from kynsey.errors import CatalogError
from kynsey.settings import Settings

if TYPE_CHECKING:
    from kynsey.catalog import Catalog

REDIS_CHECK_TIMEOUT = 3.0


def check_workers(settings: Settings, catalog: Catalog) -> None:
    """Refuse several worker processes where each would hold, alone, what must be one."""
    n = settings.workers
    if n == 1:
        return
    if settings.effective_database_url.split(":", 1)[0].split("+", 1)[0] == "sqlite":
        # SQLite allows one writer, and Kynsey's is one thread per process (kynsey/storage/jobs.py): N processes
        # would race for the file's lock, and a transaction that read before another process wrote fails at once.
        fail(f"--workers {n} needs PostgreSQL (KYNSEY_DATABASE_URL): on SQLite each process has its own writer, "
             f"and {n} processes writing one file would fail each other's writes ('database is locked'); "
             "run one worker on SQLite", 2)
    if not settings.redis_url:
        fail(f"--workers {n} needs KYNSEY_REDIS_URL: without Redis each process counts rate limits and failed "
             f"logins in its own memory, so {n} workers would allow {n} times every limit", 2)
    if local := catalog.local_tiers():
        fail(f"--workers {n} cannot serve the local tier(s) {', '.join(local)}: each worker would load its own "
             "copy of their llama.cpp model; serve the model with Ollama or llama-server (an `openai` backend), "
             "or run one worker", 2)


def check_database(settings: Settings, catalog: Catalog) -> None:
    """Migrate, then make sure the catalog keeps every plan users are on."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from kynsey.accounts.service import check_catalog_keeps_plans
    from kynsey.storage.db import make_engine, make_sessionmaker
    from kynsey.storage.migrate import upgrade

    url = settings.effective_database_url
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError) as exc:
        fail(f"bad KYNSEY_DATABASE_URL: {exc}", 2)

    async def plans() -> None:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as db:
                await check_catalog_keeps_plans(db, catalog)
        finally:
            await engine.dispose()

    try:
        upgrade(url)
        asyncio.run(plans())
    except CatalogError as exc:
        fail(str(exc), 2)
    except (SQLAlchemyError, OSError) as exc:
        fail(database_failure(settings, exc))


def check_redis(settings: Settings) -> None:
    url = settings.redis_url
    if not url:
        return
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    async def ping() -> None:
        client = Redis.from_url(
            url, socket_connect_timeout=REDIS_CHECK_TIMEOUT, socket_timeout=REDIS_CHECK_TIMEOUT
        )
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except ValueError as exc:
        fail(f"bad KYNSEY_REDIS_URL: {exc}", 2)
    except (RedisError, OSError) as exc:
        # Rate limits fail open to memory while Redis is down (kynsey/ratelimit.py): a restart during a
        # Redis outage must not add an outage of its own. Say so, loudly, and start.
        print(f"warning: Redis does not answer at KYNSEY_REDIS_URL ({type(exc).__name__}: {exc}); "
              "rate limits count in this instance's memory until it does", file=sys.stderr)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        taken = " (the port is in use: stop what holds it, or pass --port)" if exc.errno == errno.EADDRINUSE else ""
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}{taken}")
    except OverflowError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc}", 2)
    return sock


def serve(settings: Settings, host: str, port: int) -> None:
    from kynsey.logs import setup_logging
    from kynsey.runtime import build_runtime
    from kynsey.web.server import CLOSE_MARGIN
    from kynsey.web.workers import Workers

    catalog = load_catalog_or_fail(settings)
    check_workers(settings, catalog)
    check_database(settings, catalog)
    check_redis(settings)
    sock = bind(host, port)
    runtime = None
    if settings.workers == 1:  # with several, each worker builds its own, after the fork
        try:
            runtime = build_runtime(settings, catalog)
        except CatalogError as exc:  # e.g. a local tier whose model file is not there
            sock.close()
            fail(str(exc), 2)
    setup_logging(settings.log_level, settings.log_format)
    where = sock.getsockname()
    logging.getLogger("kynsey").info(
        "Kynsey serves http://%s:%d with catalog %s and database %s%s",
        f"[{where[0]}]" if ":" in where[0] else where[0],
        where[1],
        catalog.source,
        database_hint(settings),
        f" in {settings.workers} worker processes (each answers /metrics with its own counts)"
        if settings.workers > 1 else "",
    )
    try:
        if runtime is not None:
            started = run_server(settings, runtime, sock)
        else:
            serve_one = functools.partial(run_worker, settings, catalog)
            started = Workers(settings.workers, sock, serve_one, settings.shutdown_grace + CLOSE_MARGIN).run()
    finally:
        sock.close()
    if not started:
        fail("the service did not start: see the log above")


def run_server(settings: Settings, runtime, sock: socket.socket, watch_parent=None) -> bool:
    """Serve ``sock`` until SIGTERM or Ctrl+C; whether the server started."""
    from kynsey.web.app import create_app
    from kynsey.web.server import KynseyServer, server_config

    app = create_app(settings, runtime)
    server = KynseyServer(server_config(settings, app), app)
    if watch_parent is not None:
        watch_parent(lambda: setattr(server, "should_exit", True))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return server.started


def run_worker(settings: Settings, catalog: Catalog, sock: socket.socket, watch_parent) -> bool:
    """One of ``--workers N``: its own runtime (pool, backends, limiter, background work), the shared socket."""
    from kynsey.runtime import build_runtime

    return run_server(settings, build_runtime(settings, catalog), sock, watch_parent)
