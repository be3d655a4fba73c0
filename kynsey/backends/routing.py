"""Which of a backend's hosts serves a model (SPEC N5, issue 12 "fleet routing").

Two routings, chosen per backend in the catalog (``routing = ...``):

holder (default)  a usable host that holds the model (its ``/api/ps``, or a load
                  Kynsey just sent there), the least busy first; else the least
                  busy usable host with room; else the least busy usable host.
health_order      where the model is loaded, else installed, else the first
                  reachable host (Kynsey before issue 12; kept for comparison).

Usable: reachable at the last probe (or since) and its host breaker closed.
Busy: streams in flight on the host. Room: fewer models in memory (plus loads
in flight) than the host's capacity: the backend's ``max_loaded`` when the
catalog sets it, else learned from an eviction seen on the host (unknown
until then, so every host has room, and fewer models in memory ranks first).

Host breaker: ``failures`` failures in a row on one host skip it for
``cooldown`` seconds, while the other hosts serve its models; after the
cooldown the host is tried again, and one more failure skips it again. A
model missing or failing to load is the model's fault, not the host's (the
tier's circuit counts those), and does not count.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from kynsey.backends.base import BackendSnapshot, HostSnapshot, ModelState

Routing = Literal["holder", "health_order"]


@dataclass(slots=True)
class HostBreaker:
    failures: int = 0
    open_until: float = 0.0


def health_order(snapshot: BackendSnapshot, hosts: Sequence[str], model: str) -> str:
    """Kynsey's routing before issue 12: where loaded, else installed, else the first reachable host."""
    url = snapshot.host_for(model)
    if url is None:
        reachable = [h.url for h in snapshot.hosts if h.reachable]
        url = reachable[0] if reachable else hosts[0]
    return url


class HostRouter:
    """Ranks a backend's hosts for a model and remembers what it learned about them."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        routing: Routing = "holder",
        max_loaded: int | None = None,
        breaker_failures: int = 3,
        breaker_cooldown: float = 30.0,
        clock=time.monotonic,
    ) -> None:
        self.hosts = list(hosts)
        self.routing = routing
        self.configured = max_loaded is not None
        self.capacity: dict[str, int | None] = {url: max_loaded for url in self.hosts}
        self.breaker_failures = breaker_failures
        self.breaker_cooldown = breaker_cooldown
        self._clock = clock
        self._breakers = {url: HostBreaker() for url in self.hosts}
        self._loading: dict[str, Counter[str]] = {url: Counter() for url in self.hosts}  # loads in flight
        self._used: dict[tuple[str, str], float] = {}  # (host, model) -> last success, for Ollama's LRU eviction
        self.held_at: dict[tuple[str, str], float] = {}  # (host, model) -> when Kynsey saw it load there

    def now(self) -> float:
        return self._clock()

    # -- the breaker ---------------------------------------------------------------
    def breaker(self, url: str) -> Literal["closed", "open", "half_open"]:
        b = self._breakers[url]
        if b.failures < self.breaker_failures:
            return "closed"
        return "open" if self._clock() < b.open_until else "half_open"

    def failure(self, url: str) -> bool:
        """Count a failure on ``url``; True when this one opened its breaker."""
        b = self._breakers[url]
        b.failures += 1
        if b.failures >= self.breaker_failures:
            b.open_until = self._clock() + self.breaker_cooldown
            return True
        return False

    def success(self, url: str) -> None:
        self._breakers[url] = HostBreaker()

    # -- ranking ----------------------------------------------------------------------
    def usable(self, host: HostSnapshot) -> bool:
        return host.reachable and self.breaker(host.url) != "open"

    def loaded_count(self, host: HostSnapshot) -> int:
        models = {name for name, s in host.models.items() if s.loaded} | set(+self._loading[host.url])
        return len(models)

    def has_room(self, host: HostSnapshot) -> bool:
        capacity = self.capacity[host.url]
        return capacity is None or self.loaded_count(host) < capacity

    def holds(self, host: HostSnapshot, model: str) -> bool:
        state = host.models.get(model)
        return (state is not None and state.loaded) or self._loading[host.url][model] > 0

    def pick(self, snapshot: BackendSnapshot, model: str, streaming: Counter[str],
             exclude: Collection[str] = ()) -> str:
        """The host to try next for ``model`` (never one in ``exclude`` while another is left)."""
        if self.routing == "health_order":
            left = replace(snapshot, hosts=tuple(h for h in snapshot.hosts if h.url not in exclude))
            return health_order(left, [u for u in self.hosts if u not in exclude] or self.hosts, model)
        order = {url: i for i, url in enumerate(self.hosts)}
        hosts = [h for h in snapshot.hosts if h.url not in exclude] or list(snapshot.hosts)
        usable = [h for h in hosts if self.usable(h)]
        installed = [h for h in usable if model in h.models or self._loading[h.url][model]] or usable
        holders = [h for h in installed if self.holds(h, model)]
        if holders:
            return min(holders, key=lambda h: (streaming[h.url], order[h.url])).url
        if installed:
            return min(installed, key=lambda h: (not self.has_room(h), streaming[h.url], self.loaded_count(h),
                                                 order[h.url])).url
        # Nothing usable: the breaker that closes first, then the hosts in order (a probe may be stale).
        return min(hosts, key=lambda h: (not h.reachable, self._breakers[h.url].open_until, order[h.url])).url

    def room_for(self, snapshot: BackendSnapshot, model: str, keep: Collection[str]) -> bool:
        """Could ``model`` load somewhere without evicting a model in ``keep`` (keep_warm's models)?"""
        for host in snapshot.hosts:
            if not self.usable(host) or (host.models and model not in host.models):
                continue
            loaded = [name for name, s in host.models.items() if s.loaded]
            if self.has_room(host) or any(name not in keep for name in loaded):
                return True
        return False

    # -- what a request teaches ---------------------------------------------------------
    def loading(self, url: str, model: str, delta: int) -> None:
        """A load of ``model`` on ``url`` begins (+1) or ends (-1): the host counts as holding it meanwhile."""
        self._loading[url][model] += delta
        if self._loading[url][model] <= 0:
            del self._loading[url][model]

    def held(self, snapshot: BackendSnapshot, url: str, model: str) -> BackendSnapshot:
        """The snapshot once ``model`` answered on ``url``: held there, and (when the host's capacity
        is known and now exceeded) its least recently used other model evicted, as Ollama does."""
        now = self._clock()
        self._used[(url, model)] = now
        known = next((h for h in snapshot.hosts if h.url == url), None)
        if known is not None and model in known.models and known.models[model].loaded:
            return snapshot  # the usual case: nothing new
        hosts = []
        for host in snapshot.hosts:
            if host.url == url:
                state = host.models.get(model)
                if state is None or not state.loaded:
                    self.held_at[(url, model)] = now
                    state = replace(state, loaded=True) if state else ModelState(model, True, True)
                    host = replace(host, models={**host.models, model: state})
                    host = self._evict_past_capacity(host, model)
            hosts.append(host)
        return replace(snapshot, hosts=tuple(hosts))

    def _evict_past_capacity(self, host: HostSnapshot, keep: str) -> HostSnapshot:
        capacity = self.capacity[host.url]
        loaded = [name for name, s in host.models.items() if s.loaded and name != keep]
        if capacity is None or len(loaded) + 1 <= capacity:
            return host
        loaded.sort(key=lambda name: self._used.get((host.url, name), 0.0))
        gone = loaded[: len(loaded) + 1 - capacity]
        models = {name: replace(s, loaded=False) if name in gone else s for name, s in host.models.items()}
        return replace(host, models=models)

    def merge(self, previous: HostSnapshot | None, fresh: HostSnapshot, probe_started: float) -> HostSnapshot:
        """A fresh probe of one host, kept consistent with what Kynsey learned while it ran:
        a model seen loading there after the probe began stays held. Learns the host's capacity
        from an eviction: a model Kynsey loaded there pushed out another one."""
        if not fresh.reachable:
            return fresh
        url = fresh.url
        models = dict(fresh.models)
        for (host, model), at in self.held_at.items():
            if host == url and at >= probe_started and not (models.get(model) and models[model].loaded):
                models[model] = replace(models[model], loaded=True) if model in models else ModelState(model, True, True)
        if previous is not None and previous.reachable and not self.configured:
            self._learn(previous, fresh, probe_started)
        else:
            self._forget(url, probe_started)
        return replace(fresh, models=models)

    def _learn(self, previous: HostSnapshot, fresh: HostSnapshot, probe_started: float) -> None:
        url = fresh.url
        before = {name for name, s in previous.models.items() if s.loaded}
        after = {name for name, s in fresh.models.items() if s.loaded}
        loaded_here = {m for (host, m), at in self.held_at.items() if host == url}
        if loaded_here & after and (before - after - loaded_here):
            self.capacity[url] = max(1, len(after))  # a load here pushed a model out: the host is full
        elif (known := self.capacity[url]) is not None and len(after) > known:
            self.capacity[url] = len(after)
        self._forget(url, probe_started)

    def _forget(self, url: str, probe_started: float) -> None:
        for key in [k for k, at in self.held_at.items() if k[0] == url and at < probe_started]:
            del self.held_at[key]  # this probe saw what those loads did: nothing left to keep or learn from
