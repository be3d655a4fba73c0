"""HTTP plumbing shared by the backends that talk to a server (ollama, openai).

One ``httpx.AsyncClient`` per host with explicit timeouts, the choice of host
for a model, and httpx's failures translated into Kynsey's backend errors:

httpx.ConnectError / ConnectTimeout / PoolTimeout -> BackendUnreachable
httpx.TimeoutException (no answer in time)        -> ModelLoadFailed while loading, else BackendError
any other httpx.HTTPError on a request            -> BackendError
any other httpx.HTTPError during a stream         -> StreamBroken
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import Sequence

import httpx

from kynsey.backends.base import Backend, BackendSnapshot, HostSnapshot
from kynsey.errors import BackendError, BackendUnreachable, ModelLoadFailed, StreamBroken

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


def unreachable(exc: httpx.HTTPError, client: httpx.AsyncClient, model: str) -> BackendUnreachable:
    return BackendUnreachable(f"cannot reach {client.base_url} ({type(exc).__name__})", model=model)


def request_error(
    exc: httpx.HTTPError, client: httpx.AsyncClient, path: str, model: str, *, loading: bool
) -> BackendError:
    """A failed request (not a stream) as Kynsey's error."""
    if isinstance(exc, CONNECT_ERRORS):
        return unreachable(exc, client, model)
    if isinstance(exc, httpx.TimeoutException):
        err = ModelLoadFailed if loading else BackendError
        return err(f"{client.base_url} did not answer {path} in time", model=model)
    return BackendError(f"{client.base_url} failed on {path}: {type(exc).__name__}", model=model)


def stream_error(exc: httpx.HTTPError, client: httpx.AsyncClient, model: str) -> BackendError:
    """A failed streamed reply as Kynsey's error: unreachable if it never connected, else broken."""
    if isinstance(exc, CONNECT_ERRORS):
        return unreachable(exc, client, model)
    return StreamBroken(f"the stream from {client.base_url} broke: {type(exc).__name__}", model=model)


class HttpBackend(Backend):
    """A backend reached over HTTP on one or more hosts: one shared client per host,
    every host probed at once, requests sent to the best host first."""

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
        self.snapshot = BackendSnapshot(
            name, self.kind, tuple(HostSnapshot(u, False, error="not probed yet") for u in self.hosts)
        )

    async def probe(self, timeout: float) -> BackendSnapshot:
        hosts = await asyncio.gather(*(self._probe_host(url, timeout) for url in self.hosts))
        self.snapshot = BackendSnapshot(self.name, self.kind, tuple(hosts))
        return self.snapshot

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
