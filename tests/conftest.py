"""Shared fixtures: a migrated database (SQLite, or PostgreSQL when
KYNSEY_TEST_DATABASE_URL is set), a loopback Ollama server, and the real app."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from kynsey.settings import Settings
from kynsey.storage.db import make_engine
from kynsey.storage.migrate import upgrade
from kynsey.storage.models import Base
from tests.live import LiveServer, free_port
from tests.pg import private_database
from tests.servers.fake_ollama import FakeOllama

PG_URL = os.environ.get("KYNSEY_TEST_DATABASE_URL")
# The built-in catalog minus its `local` tier: a failing loopback Ollama must fail, not fall
# back to SmolLM2. Tests of the built-in catalog itself pass tiers=None.
OLLAMA_TIERS = Path(__file__).parent / "catalogs" / "ollama-tiers.toml"
REDIS_URL = os.environ.get("KYNSEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Tests of what instances share through a healthy Redis give each call 5 s, not the default 0.25 s:
# on a loaded machine a call (the first opens a connection) can take longer, and the fallback to
# this instance's memory (test_redis_faults) would then break the very sharing they check.
HEALTHY_REDIS_TIMEOUT = 5.0
DEFAULT_MODELS = {
    "llama3.2:3b-instruct-fp16": 6_433_687_776,
    "qwen2.5:14b-instruct": 8_988_124_069,
    "qwen2.5-coder:7b-instruct": 4_683_087_332,
}


def _run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    """A database migrated to head, private to this test run."""
    if PG_URL:
        with private_database("kynsey_test", PG_URL) as url:
            yield url
    else:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'kynsey.db'}"
        upgrade(url)
        yield url


async def _empty_tables(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            names = [t.name for t in reversed(Base.metadata.sorted_tables)]
            if conn.dialect.name == "postgresql":
                await conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
            else:
                for name in names:
                    await conn.execute(text(f"DELETE FROM {name}"))
    finally:
        await engine.dispose()


@pytest.fixture
def db_url(database_url: str) -> str:
    """The run's database, emptied before each test."""
    _run(_empty_tables(database_url))
    return database_url


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models=dict(DEFAULT_MODELS), loaded=["llama3.2:3b-instruct-fp16"]) as fake:
        yield fake


@pytest.fixture
def settings_for(db_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test server: this test's database and data folder, fast status refresh,
    the Ollama-only catalog unless ``tiers`` is given (None: the built-in one)."""

    def build(**overrides) -> Settings:
        values = dict(
            tiers=OLLAMA_TIERS,
            database_url=db_url,
            data_dir=tmp_path / "data",
            status_refresh=0.2,
            status_timeout=0.5,
            redis_prefix=f"kynsey-test-{uuid.uuid4().hex[:8]}",
        )
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def start_server(settings_for) -> Iterator[Callable[..., LiveServer]]:
    """Start real Kynsey servers on loopback; all are stopped after the test."""
    servers: list[LiveServer] = []

    def start(**overrides) -> LiveServer:
        server = LiveServer(settings_for(**overrides)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server, fake_ollama: FakeOllama) -> LiveServer:
    """A Kynsey server using the default catalog against the loopback Ollama."""
    srv = start_server(ollama_host=fake_ollama.url)
    srv.refresh_status()
    return srv


def pytest_collection_modifyitems(config, items):
    """On the PostgreSQL pass, run only the tests that touch the database; the rest ran on the SQLite pass."""
    if not PG_URL:
        return
    keep = [item for item in items if "database_url" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture
def throwaway_redis(tmp_path) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=1)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield proc, f"redis://127.0.0.1:{port}/0"
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.wait(10)
