"""A loopback TCP proxy a test can cut or freeze, to fault PostgreSQL or Redis
without touching the shared servers other tests use.

``cut()``: close every connection and refuse new ones (the server died).
``freeze()``: keep connections open but pass no bytes either way, and accept new
ones without answering (the server hangs, as under SIGSTOP). ``restore()``:
forward again (new connections; frozen ones resume).
"""

from __future__ import annotations

import asyncio
import socket
import threading


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.state = "up"  # up | frozen | cut
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")
        self._ready = threading.Event()

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _stop(self) -> None:
        self._server.close()
        self._close_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._accept, sock=sock)

    def _call(self, fn) -> None:
        if self._loop is None or not self._loop.is_running():
            return
        done = threading.Event()

        def work():
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(work)
        done.wait(5)

    def cut(self) -> None:
        self.state = "cut"
        self._call(self._close_all)

    def freeze(self) -> None:
        self.state = "frozen"
        self._call(self._flowing.clear)

    def restore(self) -> None:
        self.state = "up"
        self._call(self._flowing.set)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state == "cut":
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            await self._flowing.wait()
            if self.state == "cut":
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            await self._flowing.wait()  # frozen: hold the bytes
            if self.state == "cut":
                return
            writer.write(data)
            await writer.drain()
