"""Run the real Kynsey app on loopback in a thread, the way users reach it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from kynsey.accounts.service import create_user, issue_token
from kynsey.runtime import Runtime
from kynsey.settings import Settings
from kynsey.web.app import create_app

T = TypeVar("T")


def eventually(check: Callable[[], T], what: str, timeout: float = 20.0, every: float = 0.05) -> T:
    """Poll ``check`` until it returns a truthy value, and return it. It waits on a state, never
    for a fixed time, and asserts nothing about how long that took (a busy machine is slow)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    """A port nothing listens on now (for a server a test starts in a process of its own)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Kynsey test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=20)

    @property
    def runtime(self) -> Runtime:
        return self.app.state.runtime

    def call(self, make: Callable[[Runtime], Awaitable[T]]) -> T:
        """Run ``make(runtime)`` on the server's own event loop and return its result."""
        return asyncio.run_coroutine_threadsafe(make(self.runtime), self.loop).result(timeout=60)

    def add_user(self, name: str, plan: str = "standard", *, admin: bool = False, password: str | None = None) -> str:
        """Create a user through the real account service; return a fresh API token."""

        async def work(rt: Runtime) -> str:
            async with rt.sessions() as db:
                user = await create_user(db, rt.catalog, name, plan, password=password, admin=admin)
                token = await issue_token(db, user)
                await db.commit()
                return token

        return self.call(work)

    def refresh_status(self) -> None:
        self.call(lambda rt: rt.monitor.refresh())

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)


def metric(server, name: str) -> float:
    for family in text_string_to_metric_families(server.client().get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} is not exported")
