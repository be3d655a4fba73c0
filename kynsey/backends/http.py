"""HTTP plumbing shared by the backends that talk to a server (ollama, openai).

One aiohttp client per host (``HostClient``) with explicit timeouts, the choice of host for a
model, and aiohttp's failures translated into Kynsey's backend errors:

aiohttp.ClientConnectorError / ConnectionTimeoutError -> BackendUnreachable
aiohttp.ServerTimeoutError (no answer in time)        -> ModelLoadFailed while loading, else BackendError
any other aiohttp.ClientError on a request            -> BackendError
any other aiohttp.ClientError during a stream         -> StreamBroken

Why aiohttp and not httpx: on this path every reply's first token waits for the request to the
model server, and every token passes through the response parser. Measured on loopback (2 cores,
sequential streamed requests of 20 tokens), httpx took 1.6-1.9 ms to the first byte and 1.9-2.2 ms
of CPU per request, httpcore alone 1.2 and 1.3 ms, aiohttp (a C parser) 0.7 and 0.4 ms.

Error messages name the backend, never a host's URL (users read them); the
URL rides along as ``BackendError.host`` for logs and admins.

Which host serves a model: ``kynsey.backends.routing`` (by default the host
that holds it, else the least busy one with room; a host breaker skips a host
that keeps failing). What a request teaches is kept at once: a model that
answered on a host is held there in the snapshot (so the next request goes to
the same host), and that host is re-read in the background.

Health between probes: a host that refuses a connection is marked down in the
snapshot at once (a tier's status follows a failed chat or warm-up without
waiting for the next probe). A host with a live stream is known to be up, so a
probe that times out behind a long generation does not mark it down, and a
backend whose server a probe can disturb (llama.cpp's server cuts a running
stream when another request arrives) is not probed while it streams.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import aiohttp
import orjson

from kynsey.backends.base import Backend, BackendSnapshot, HostLoad, HostSnapshot
from kynsey.backends.routing import HostRouter, Routing
from kynsey.errors import BackendError, BackendUnreachable, ModelLoadFailed, ModelMissing, PromptTooLong, StreamBroken

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BackendError)
# Failures that mean nothing reached the server: the host is down, or no connection came in time.
CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# Failures the host's breaker does not count. A model's own: the tier's circuit counts them (one
# broken model file would otherwise close every host to every model). A request's own: no one does.
NOT_THE_HOSTS = (ModelMissing, ModelLoadFailed, PromptTooLong)
# Hundreds of concurrent streams per backend (SPEC N2) each hold a connection.
MAX_CONNECTIONS = 1000
KEEP_ALIVE_SECONDS = 5.0  # an idle connection to a model server is closed after this
# A streamed line is one token's worth (a few hundred bytes). A server that sends bytes without
# an end of line would otherwise have them kept until memory runs out.
MAX_LINE_BYTES = 1 << 20
# How a reused connection fails when its server had closed it (see HostClient._send).
STALE_ERRORS = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
STALE_RETRIES = 2
DRAIN_SECONDS = 0.1  # how long the end of a streamed body may take after its last line


@dataclass(slots=True)
class Fetched:
    """A whole (not streamed) answer of a model server."""

    status: int
    reason: str
    path: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return orjson.loads(self.body)


async def fetched(resp: aiohttp.ClientResponse) -> Fetched:
    return Fetched(resp.status, resp.reason or "", resp.url.path, await resp.read())


class HostClient:
    """One host's HTTP client: an aiohttp session (its own pool of kept-alive connections) and
    Kynsey's timeouts for it. ``connect`` bounds the wait for a connection (from the pool or a new
    one); ``read``, the wait for each read of an answer. The session is made on first use, on the
    event loop that uses it."""

    def __init__(self, url: str, *, connect_timeout: float, read_timeout: float,
                 headers: dict[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No proxy from the environment: model servers are reached directly.
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEP_ALIVE_SECONDS)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers, trust_env=False,
                                                  json_serialize=_json, timeout=self.timeout())
        return self._session

    def timeout(self, read: float | None = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(connect=self.connect_timeout, sock_read=self.read_timeout if read is None else read)

    async def fetch(self, method: str, path: str, *, json: Any = None, read_timeout: float | None = None) -> Fetched:
        """A request and its whole answer; aiohttp's errors as they come."""
        async with self.stream(method, path, json=json, read_timeout=read_timeout) as resp:
            return await fetched(resp)

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, json: Any = None,
                     read_timeout: float | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """``async with client.stream(...) as resp``: the answer, its body read as it arrives."""
        async with await self._send(method, path, json, self.timeout(read_timeout)) as resp:
            yield resp  # the connection then goes back to the pool if the body was read to its end

    async def _send(self, method: str, path: str, json: Any, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """The request, until its answer's headers. A kept-alive connection that the server closed
        (it stopped, or dropped the idle connection) fails when reused, before any answer: aiohttp
        does not look at a pooled socket before reusing it (httpcore did). Such a request is sent
        again, on another connection, at most ``STALE_RETRIES`` times; a server that is gone then
        refuses the new connection (BackendUnreachable)."""
        retries = STALE_RETRIES
        while True:
            try:
                return await self.session.request(method, self.url + path, json=json, timeout=timeout)
            except CONNECT_ERRORS:
                raise
            except STALE_ERRORS:
                if not retries:
                    raise
                retries -= 1

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def line_batches(resp: aiohttp.ClientResponse) -> AsyncIterator[list[bytes]]:
    """The response body's lines, a batch per network read (not a step per line: a model
    server sends a line per token, and at hundreds of streams each step costs)."""
    rest = b""
    read = resp.content.readany
    while True:
        try:
            data = await read()
        except RuntimeError as exc:  # aiohttp's word for a read after the session was closed
            raise aiohttp.ClientConnectionError(str(exc)) from exc
        if not data:
            break
        if b"\n" not in data:
            rest += data
        else:
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            yield lines
        if len(rest) > MAX_LINE_BYTES:
            raise StreamBroken(f"the backend sent a line longer than {MAX_LINE_BYTES // (1 << 20)} MiB")
    if rest.strip():
        yield [rest]


async def finish_body(batches: AsyncIterator[list[bytes]]) -> None:
    """Read the rest of a body whose last line has come (the end of its chunked encoding), so that its
    connection goes back to the pool: leaving it unread closes the connection, and the next request
    to that host pays a new connection before its first token. A server that lingers past
    ``DRAIN_SECONDS`` costs only that connection."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in batches:
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


def probe_error(exc: Exception) -> str:
    """Why a probe failed, in words users may read: aiohttp's messages can carry the host's address."""
    if isinstance(exc, aiohttp.ClientError):
        return f"{type(exc).__name__} (connection refused or broken)" if isinstance(exc, aiohttp.ClientConnectionError) else type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def host_url(client: HostClient) -> str:
    return client.url


class HttpBackend(Backend):
    """A backend reached over HTTP on one or more hosts: one client per host,
    every host probed at once, requests sent to the best host first."""

    probe_while_streaming = True  # False where a probe can cut a running stream

    def __init__(
        self,
        name: str,
        hosts: Sequence[str],
        *,
        connect_timeout: float,
        read_timeout: float,
        load_timeout: float,
        headers: dict[str, str] | None = None,
        routing: Routing = "holder",
        max_loaded: int | None = None,
        breaker_failures: int = 3,
        breaker_cooldown: float = 30.0,
    ) -> None:
        super().__init__(name)
        if not hosts:
            raise ValueError(f"a {self.kind} backend needs at least one host")
        self.hosts = list(hosts)
        self.load_timeout = load_timeout
        self.router = HostRouter(self.hosts, routing=routing, max_loaded=max_loaded,
                                 breaker_failures=breaker_failures, breaker_cooldown=breaker_cooldown)
        self._probe_timeout = connect_timeout
        self._rereads: set[asyncio.Task] = set()
        self._clients = {url: HostClient(url, connect_timeout=connect_timeout, read_timeout=read_timeout, headers=headers)
                         for url in self.hosts}
        self._streaming: Counter[str] = Counter()
        self._probing: dict[str, asyncio.Future[HostSnapshot]] = {}
        self.snapshot = BackendSnapshot(
            name, self.kind, tuple(HostSnapshot(u, False, error="not probed yet") for u in self.hosts)
        )

    # -- errors -------------------------------------------------------------------
    def where(self, client: HostClient) -> str:
        """How users see a host: the backend's name, and the host's number when there are several."""
        if len(self.hosts) == 1:
            return f"backend '{self.name}'"
        return f"backend '{self.name}' host {self.hosts.index(host_url(client)) + 1}"

    def unreachable(self, exc: aiohttp.ClientError, client: HostClient, model: str) -> BackendUnreachable:
        error = BackendUnreachable(f"cannot reach {self.where(client)} ({type(exc).__name__})", model=model)
        return self.mark_down(client, error)

    def request_error(self, exc: aiohttp.ClientError, client: HostClient, path: str, model: str, *,
                      loading: bool) -> BackendError:
        """A failed request (not a stream) as Kynsey's error."""
        if isinstance(exc, CONNECT_ERRORS):
            return self.unreachable(exc, client, model)
        if isinstance(exc, aiohttp.ServerTimeoutError):
            err = ModelLoadFailed if loading else BackendError
            return err(f"{self.where(client)} did not answer {path} in time", model=model, host=host_url(client))
        return BackendError(f"{self.where(client)} failed on {path}: {type(exc).__name__}", model=model,
                            host=host_url(client))

    def stream_error(self, exc: aiohttp.ClientError, client: HostClient, model: str) -> BackendError:
        """A failed streamed reply as Kynsey's error: unreachable if it never connected, else broken."""
        if isinstance(exc, CONNECT_ERRORS):
            return self.unreachable(exc, client, model)
        return StreamBroken(f"the stream from {self.where(client)} broke: {type(exc).__name__}", model=model,
                            host=host_url(client))

    def mark_down(self, client: HostClient, error: E) -> E:
        """Show the host as unreachable now, not at the next probe."""
        url = error.host = host_url(client)
        hosts = tuple(replace(h, reachable=False, error=error.message) if h.url == url else h for h in self.snapshot.hosts)
        self.snapshot = replace(self.snapshot, hosts=hosts)
        log.warning("backend %s: %s is down: %s", self.name, url, error.message)
        return error

    # -- streams --------------------------------------------------------------------
    @asynccontextmanager
    async def streaming(self, client: HostClient, method: str, path: str, **kwargs) -> AsyncIterator[aiohttp.ClientResponse]:
        """``client.stream(...)``, with the host counted as streaming from the request on.

        Where a probe can cut a stream, a probe of this host still in flight is let finish first."""
        url = host_url(client)
        probe = self._probing.get(url)
        if probe is not None and not self.probe_while_streaming:
            await asyncio.wait([probe], timeout=client.connect_timeout)
        self._streaming[url] += 1
        try:
            async with client.stream(method, path, **kwargs) as resp:
                yield resp
        finally:
            self._streaming[url] -= 1

    # -- status ---------------------------------------------------------------------
    async def probe(self, timeout: float) -> BackendSnapshot:
        self._probe_timeout = timeout
        started = self.router.now()
        previous = {h.url: h for h in self.snapshot.hosts}
        fresh = await asyncio.gather(*(self._probe_or_keep(url, previous.get(url), timeout) for url in self.hosts))
        current = {h.url: h for h in self.snapshot.hosts}  # with what requests taught while the probe ran
        hosts = tuple(self.router.merge(current.get(h.url), h, started) for h in fresh)
        self.snapshot = BackendSnapshot(self.name, self.kind, hosts)
        return self.snapshot

    async def _reread(self, url: str) -> None:
        """Probe one host again (after a model loaded there: did it push another one out?)."""
        started = self.router.now()
        fresh = await self._probe_or_keep(url, self._host(url), self._probe_timeout)
        merged = self.router.merge(self._host(url), fresh, started)
        self.snapshot = replace(self.snapshot, hosts=tuple(merged if h.url == url else h for h in self.snapshot.hosts))

    def _host(self, url: str) -> HostSnapshot | None:
        return next((h for h in self.snapshot.hosts if h.url == url), None)

    async def _probe_or_keep(self, url: str, previous: HostSnapshot | None, timeout: float) -> HostSnapshot:
        if previous is None or not previous.reachable or self._streaming[url] == 0:
            return await self._probe_now(url, timeout)
        if not self.probe_while_streaming:
            return previous  # known up: it streams
        fresh = await self._probe_now(url, timeout)
        if not fresh.reachable and self._streaming[url] > 0 and fresh.timed_out:
            return previous  # busy with a long generation, not down
        return fresh

    async def _probe_now(self, url: str, timeout: float) -> HostSnapshot:
        probe = self._probing[url] = asyncio.ensure_future(self._probe_host(url, timeout))
        try:
            return await probe
        finally:
            if self._probing.get(url) is probe:
                del self._probing[url]

    @abstractmethod
    async def _probe_host(self, url: str, timeout: float) -> HostSnapshot:
        """One host's health and models, within ``timeout``."""

    # -- routing ----------------------------------------------------------------------
    def _clients_for(self, model: str) -> Iterator[HostClient]:
        """The best host for ``model``, then (if the caller asks for another) the best of the rest,
        ranked again then: a host found down meanwhile is no longer first for anyone."""
        tried: set[str] = set()
        while len(tried) < len(self.hosts):
            url = self.router.pick(self.snapshot, model, self._streaming, exclude=tried)
            tried.add(url)
            yield self._clients[url]

    def _client_for(self, model: str) -> HostClient:
        return self._clients[self.router.pick(self.snapshot, model, self._streaming)]

    @contextmanager
    def attempt(self, client: HostClient, model: str, *, loads: bool = True) -> Iterator[Attempt]:
        """One request for ``model`` on ``client``'s host: a load in flight there until it ends (when
        it ``loads`` the model), the host's breaker told how it went, and the model held there once it answered."""
        url = host_url(client)
        host = self._host(url)
        cold = loads and (host is None or not (model in host.models and host.models[model].loaded))
        attempt = Attempt(self, url, model, cold)
        if cold:
            self.router.loading(url, model, +1)
        try:
            yield attempt
        except BackendError as exc:
            if not isinstance(exc, NOT_THE_HOSTS) and self.router.failure(url):
                log.warning("backend %s: %s failed %d times in a row; other hosts serve its models for %gs",
                            self.name, url, self.router.breaker_failures, self.router.breaker_cooldown)
            raise
        finally:
            if cold:
                self.router.loading(url, model, -1)

    def served(self, url: str, model: str, cold: bool) -> None:
        self.router.success(url)
        self.snapshot = self.router.held(self.snapshot, url, model)
        if cold:  # it loaded there: read the host again to see what the load pushed out
            task = asyncio.ensure_future(self._reread(url))
            self._rereads.add(task)
            task.add_done_callback(self._rereads.discard)

    def host_load(self, url: str) -> HostLoad:
        return HostLoad(self._streaming[url], self.router.breaker(url), self.router.capacity.get(url))

    def room_for(self, model: str, keep: Collection[str]) -> bool:
        return self.router.room_for(self.snapshot, model, keep)

    async def aclose(self) -> None:
        for task in list(self._rereads):
            task.cancel()
        await asyncio.gather(*self._rereads, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self._clients.values()))


class Attempt:
    """A request in flight on one host; ``served()`` once the model answered there."""

    __slots__ = ("backend", "cold", "done", "model", "url")

    def __init__(self, backend: HttpBackend, url: str, model: str, cold: bool) -> None:
        self.backend, self.url, self.model, self.cold, self.done = backend, url, model, cold, False

    def served(self) -> None:
        if not self.done:
            self.done = True
            self.backend.served(self.url, self.model, self.cold)
