"""HTTP plumbing shared by the backends that talk to a server (ollama, openai).

One ``httpx.AsyncClient`` per host with explicit timeouts, the choice of host
for a model, and httpx's failures translated into Kynsey's backend errors:

httpx.ConnectError / ConnectTimeout / PoolTimeout -> BackendUnreachable
httpx.TimeoutException (no answer in time)        -> ModelLoadFailed while loading, else BackendError
any other httpx.HTTPError on a request            -> BackendError
any other httpx.HTTPError during a stream         -> StreamBroken
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from kynsey.backends.base import BackendSnapshot
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
