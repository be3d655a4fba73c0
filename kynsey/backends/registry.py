"""Build one Backend per ``[backends.NAME]`` table of the catalog, chosen by its kind."""

from __future__ import annotations

from kynsey.backends.base import Backend
from kynsey.catalog import BackendConfig, Catalog
from kynsey.settings import Settings, normalise_ollama_host


def build_backends(catalog: Catalog, settings: Settings) -> dict[str, Backend]:
    return {name: build_backend(name, config, catalog, settings) for name, config in catalog.backends.items()}


def build_backend(name: str, config: BackendConfig, catalog: Catalog, settings: Settings) -> Backend:
    timeouts = dict(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        load_timeout=settings.load_timeout,
    )
    routing = dict(
        routing=config.routing,
        max_loaded=config.host_max_loaded,
        breaker_failures=settings.circuit_failures,
        breaker_cooldown=settings.circuit_cooldown,
    )
    if config.kind == "ollama":
        from kynsey.backends.ollama import OllamaBackend

        hosts = [normalise_ollama_host(h) for h in config.hosts] or [settings.ollama_host]
        return OllamaBackend(name, hosts, **timeouts, **routing)
    if config.kind == "openai":
        from kynsey.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(name, config.hosts, api_key=config.api_key, **timeouts, **routing)
    if config.kind == "local":
        try:
            from kynsey.backends.local import LocalBackend
        except ImportError as exc:  # installed without the `local` extra: show why, do not fail start-up
            from kynsey.backends.unavailable import UnavailableBackend

            return UnavailableBackend(name, "local", f"{exc}")

        tiers = [t for t in catalog.tiers.values() if t.backend == name]
        return LocalBackend(name, config, tiers, data_dir=settings.data_dir)
    raise ValueError(f"unknown backend kind {config.kind!r}")
