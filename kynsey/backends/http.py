"""HTTP plumbing shared by the backends that talk to a server (ollama, openai).

One ``httpx.AsyncClient`` per host with explicit timeouts, the choice of host
for a model, and httpx's failures translated into Kynsey's backend errors:

httpx.ConnectError / ConnectTimeout / PoolTimeout -> BackendUnreachable
httpx.TimeoutException (no answer in time)        -> ModelLoadFailed while loading, else BackendError
any other httpx.HTTPError on a request            -> BackendError
any other httpx.HTTPError during a stream         -> StreamBroken

Error messages name the backend, never a host's URL (users read them); the
URL rides along as ``BackendError.host`` for logs and admins.

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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx

from kynsey.backends.base import Backend, BackendSnapshot, HostSnapshot
from kynsey.errors import BackendError, BackendUnreachable, ModelLoadFailed, StreamBroken

log = logging.getLogger(__name__)
# Failures that mean nothing reached the server: the host is down or saturated.
CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Hundreds of concurrent streams per backend (SPEC N2) each hold a connection.
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=200)


def new_client(
    url: str, *, connect_timeout: float, read_timeout: float, headers: dict[str, str] | None = None
) -> httpx.AsyncClient:
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
    return httpx.AsyncClient(base_url=url, timeout=timeout, limits=LIMITS, headers=headers)


def pick_host(snapshot: BackendSnapshot, hosts: Sequence[str], model: str) -> str:
    """The host to send ``model`` to: where it is loaded, else installed, else any reachable one."""
    url = snapshot.host_for(model)
    if url is None:
        reachable = [h.url for h in snapshot.hosts if h.reachable]
        url = reachable[0] if reachable else hosts[0]
    return url


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
    ) -> None:
        super().__init__(name)
        if not hosts:
            raise ValueError(f"a {self.kind} backend needs at least one host")
        self.hosts = list(hosts)
        self.load_timeout = load_timeout
        self._clients = {
            url: new_client(url, connect_timeout=connect_timeout, read_timeout=read_timeout, headers=headers)
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

    def mark_down(self, client: httpx.AsyncClient, error: BackendError) -> BackendError:
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
        try:
            async with client.stream(method, path, **kwargs) as resp:
                yield resp
        finally:
            self._streaming[url] -= 1

    # -- status ---------------------------------------------------------------------
    async def probe(self, timeout: float) -> BackendSnapshot:
        previous = {h.url: h for h in self.snapshot.hosts}
        hosts = await asyncio.gather(*(self._probe_or_keep(url, previous.get(url), timeout) for url in self.hosts))
        self.snapshot = BackendSnapshot(self.name, self.kind, tuple(hosts))
        return self.snapshot

    async def _probe_or_keep(self, url: str, previous: HostSnapshot | None, timeout: float) -> HostSnapshot:
        known_up = previous is not None and previous.reachable and self._streaming[url] > 0
        if known_up and not self.probe_while_streaming:
            return previous
        probe = self._probing[url] = asyncio.ensure_future(self._probe_host(url, timeout))
        try:
            fresh = await probe
        finally:
            if self._probing.get(url) is probe:
                del self._probing[url]
        if not fresh.reachable and known_up and self._streaming[url] > 0 and fresh.timed_out:
            return previous  # busy with a long generation, not down
        return fresh

    @abstractmethod
    async def _probe_host(self, url: str, timeout: float) -> HostSnapshot:
        """One host's health and models, within ``timeout``."""

    def _clients_for(self, model: str) -> list[httpx.AsyncClient]:
        """The best host for ``model`` first, then every other host, for failover."""
        first = pick_host(self.snapshot, self.hosts, model)
        return [self._clients[first]] + [self._clients[url] for url in self.hosts if url != first]

    def _client_for(self, model: str) -> httpx.AsyncClient:
        return self._clients[pick_host(self.snapshot, self.hosts, model)]

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._clients.values()))
