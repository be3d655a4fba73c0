"""Build one Backend per ``[backends.NAME]`` table of the catalog, chosen by its kind."""

from __future__ import annotations

from typing import TypedDict

from kynsey.backends.base import Backend
from kynsey.backends.routing import Routing
from kynsey.catalog import BackendConfig, Catalog
from kynsey.settings import Settings, normalise_ollama_host


def build_backends(catalog: Catalog, settings: Settings) -> dict[str, Backend]:
    return {name: build_backend(name, config, catalog, settings) for name, config in catalog.backends.items()}


class Timeouts(TypedDict):
    connect_timeout: float
    read_timeout: float
    load_timeout: float


def timeouts(settings: Settings) -> Timeouts:
    return Timeouts(connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout,
                    load_timeout=settings.load_timeout)


class HostRouting(TypedDict):
    routing: Routing
    max_loaded: int | None
    breaker_failures: int
    breaker_cooldown: float


def host_routing(config: BackendConfig, settings: Settings) -> HostRouting:
    """How an HTTP backend spreads models over its hosts, and when it skips a failing host."""
    return HostRouting(routing=config.routing, max_loaded=config.host_max_loaded,
                   breaker_failures=settings.circuit_failures, breaker_cooldown=settings.circuit_cooldown)


def build_backend(name: str, config: BackendConfig, catalog: Catalog, settings: Settings) -> Backend:
    if config.kind == "ollama":
        from kynsey.backends.ollama import OllamaBackend

        hosts = [normalise_ollama_host(h) for h in config.hosts] or [settings.ollama_host]
        return OllamaBackend(name, hosts, **timeouts(settings), **host_routing(config, settings))
    if config.kind == "openai":
        from kynsey.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(name, config.hosts, api_key=config.api_key, **timeouts(settings), **host_routing(config, settings))
    if config.kind == "local":
        try:
            from kynsey.backends.local import LocalBackend
        except ImportError as exc:  # installed without the `local` extra: show why, do not fail start-up
            from kynsey.backends.unavailable import UnavailableBackend

            return UnavailableBackend(name, "local", f"{exc}")

        tiers = [t for t in catalog.tiers.values() if t.backend == name]
        return LocalBackend(name, config, tiers, data_dir=settings.data_dir)
    raise ValueError(f"unknown backend kind {config.kind!r}")
