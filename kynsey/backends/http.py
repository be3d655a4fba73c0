"""HTTP plumbing shared by the backends that talk to a server (ollama, openai).

A few ``httpx.AsyncClient`` per host (``HostClients``) with explicit timeouts, the choice of host
for a model, and httpx's failures translated into Kynsey's backend errors:

httpx.ConnectError / ConnectTimeout / PoolTimeout -> BackendUnreachable
httpx.TimeoutException (no answer in time)        -> ModelLoadFailed while loading, else BackendError
any other httpx.HTTPError on a request            -> BackendError
any other httpx.HTTPError during a stream         -> StreamBroken

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
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from functools import partial
from typing import TypeVar

import httpx

from kynsey.backends.base import Backend, BackendSnapshot, HostLoad, HostSnapshot
from kynsey.backends.routing import HostRouter, Routing
from kynsey.errors import BackendError, BackendUnreachable, ModelLoadFailed, ModelMissing, StreamBroken

log = logging.getLogger(__name__)
E = TypeVar("E", bound=BackendError)
# Failures that mean nothing reached the server: the host is down or saturated.
CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# A model's own failures: the tier's circuit counts them, not the host's breaker (one broken model
# file would otherwise close every host to every model).
MODEL_ERRORS = (ModelMissing, ModelLoadFailed)
# Hundreds of concurrent streams per backend (SPEC N2) each hold a connection.
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
DRAIN_SECONDS = 0.1  # how long the end of a streamed body may take after its last line
CLIENTS_PER_HOST = 8  # see HostClients


def new_client(
    url: str, *, connect_timeout: float, read_timeout: float, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
    return httpx.AsyncClient(base_url=url, timeout=timeout, limits=LIMITS, headers=headers)


class HostClients:
    """One host's clients. httpx's pool looks at every connection it holds on each request and each
    release: with 200 streams to one host in one pool, that scan was a tenth of Kynsey's CPU. So the
    streams are spread over up to ``CLIENTS_PER_HOST`` pools, each request to the one with the fewest:
    while the host is quiet that is always the first, whose connections stay open and warm, and the
    others are made only when every pool has a stream. The first client also serves probes, loads
    and unloads."""

    def __init__(self, make: Callable[[], httpx.AsyncClient], count: int = CLIENTS_PER_HOST) -> None:
        self._make, self._count = make, count
        self.first = make()
        self.all = [self.first]
        self.streams: Counter[httpx.AsyncClient] = Counter()

    def next(self) -> httpx.AsyncClient:
        client = min(self.all, key=self.streams.__getitem__)
        if self.streams[client] and len(self.all) < self._count:
            client = self._make()
            self.all.append(client)
        return client

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self.all))


async def line_batches(resp: httpx.Response) -> AsyncIterator[list[bytes]]:
    """The response body's lines, a batch per network read (not a step per line: a model
    server sends a line per token, and at hundreds of streams each step costs)."""
    rest = b""
    async for data in resp.aiter_bytes():
        if b"\n" not in data:
            rest += data
            continue
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        yield lines
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
    except (TimeoutError, httpx.HTTPError):
        pass


def probe_error(exc: Exception) -> str:
    """Why a probe failed, in words users may read: httpx's messages can carry the host's address."""
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__} (connection refused or broken)" if isinstance(exc, httpx.TransportError) else type(exc).__name__
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def host_url(client: httpx.AsyncClient) -> str:
    return str(client.base_url).rstrip("/")


class HttpBackend(Backend):
    """A backend reached over HTTP on one or more hosts: one shared client per host,
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
        self._clients = {
            url: HostClients(partial(new_client, url, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                     headers=headers))
            for url in self.hosts
        }
        self._streaming: Counter[str] = Counter()
        self._probing: dict[str, asyncio.Future[HostSnapshot]] = {}
        self.snapshot = BackendSnapshot(
            name, self.kind, tuple(HostSnapshot(u, False, error="not probed yet") for u in self.hosts)
        )

    # -- errors -------------------------------------------------------------------
    def where(self, client: httpx.AsyncClient) -> str:
        """How users see a host: the backend's name, and the host's number when there are several."""
        if len(self.hosts) == 1:
            return f"backend '{self.name}'"
        return f"backend '{self.name}' host {self.hosts.index(host_url(client)) + 1}"

    def unreachable(self, exc: httpx.HTTPError, client: httpx.AsyncClient, model: str) -> BackendUnreachable:
        error = BackendUnreachable(f"cannot reach {self.where(client)} ({type(exc).__name__})", model=model)
        return self.mark_down(client, error)

    def request_error(self, exc: httpx.HTTPError, client: httpx.AsyncClient, path: str, model: str, *,
                      loading: bool) -> BackendError:
        """A failed request (not a stream) as Kynsey's error."""
        if isinstance(exc, CONNECT_ERRORS):
            return self.unreachable(exc, client, model)
        if isinstance(exc, httpx.TimeoutException):
            err = ModelLoadFailed if loading else BackendError
            return err(f"{self.where(client)} did not answer {path} in time", model=model, host=host_url(client))
        return BackendError(f"{self.where(client)} failed on {path}: {type(exc).__name__}", model=model,
                            host=host_url(client))

    def stream_error(self, exc: httpx.HTTPError, client: httpx.AsyncClient, model: str) -> BackendError:
        """A failed streamed reply as Kynsey's error: unreachable if it never connected, else broken."""
        if isinstance(exc, CONNECT_ERRORS):
            return self.unreachable(exc, client, model)
        return StreamBroken(f"the stream from {self.where(client)} broke: {type(exc).__name__}", model=model,
                            host=host_url(client))

    def mark_down(self, client: httpx.AsyncClient, error: E) -> E:
        """Show the host as unreachable now, not at the next probe."""
        url = error.host = host_url(client)
        hosts = tuple(replace(h, reachable=False, error=error.message) if h.url == url else h for h in self.snapshot.hosts)
        self.snapshot = replace(self.snapshot, hosts=hosts)
        log.warning("backend %s: %s is down: %s", self.name, url, error.message)
        return error

    # -- streams --------------------------------------------------------------------
    @asynccontextmanager
    async def streaming(self, client: httpx.AsyncClient, method: str, path: str, **kwargs) -> AsyncIterator[httpx.Response]:
        """``client.stream(...)``, with the host counted as streaming from the request on.

        Where a probe can cut a stream, a probe of this host still in flight is let finish first."""
        url = host_url(client)
        probe = self._probing.get(url)
        if probe is not None and not self.probe_while_streaming:
            await asyncio.wait([probe], timeout=client.timeout.connect)
        self._streaming[url] += 1
        self._clients[url].streams[client] += 1
        try:
            async with client.stream(method, path, **kwargs) as resp:
                yield resp
        finally:
            self._streaming[url] -= 1
            self._clients[url].streams[client] -= 1

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
    def _clients_for(self, model: str) -> Iterator[httpx.AsyncClient]:
        """The best host for ``model``, then (if the caller asks for another) the best of the rest,
        ranked again then: a host found down meanwhile is no longer first for anyone."""
        tried: set[str] = set()
        while len(tried) < len(self.hosts):
            url = self.router.pick(self.snapshot, model, self._streaming, exclude=tried)
            tried.add(url)
            yield self._clients[url].next()

    def _client_for(self, model: str) -> httpx.AsyncClient:
        return self._clients[self.router.pick(self.snapshot, model, self._streaming)].next()

    @contextmanager
    def attempt(self, client: httpx.AsyncClient, model: str, *, loads: bool = True) -> Iterator[Attempt]:
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
            if not isinstance(exc, MODEL_ERRORS) and self.router.failure(url):
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
