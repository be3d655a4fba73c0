"""Reload the catalog without a restart (SPEC F1).

The new file is validated whole before anything changes: a bad file leaves the
running catalog as it was, and so does a file that lacks a plan users are on
(refused with the plan and the users named; see ``check_catalog_keeps_plans``). Backends whose configuration (or, for ``local``,
whose tiers) changed are rebuilt; the old ones are closed only once no stream
uses them. Each instance also watches the file's modification time, so
instances sharing the file pick a change up within a status refresh (SPEC N5).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kynsey.accounts.service import check_catalog_keeps_plans
from kynsey.audit import AuditRecord, append
from kynsey.backends.registry import build_backend
from kynsey.catalog.loader import load_catalog
from kynsey.catalog.schema import Catalog
from kynsey.errors import CatalogError

if TYPE_CHECKING:
    from kynsey.backends.base import Backend
    from kynsey.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    source: str
    tiers: list[str]
    rebuilt_backends: list[str]


def _backend_key(catalog: Catalog, name: str) -> tuple:
    config = catalog.backends[name]
    tiers = tuple(t for t in catalog.tiers.values() if t.backend == name) if config.kind == "local" else ()
    return config, tiers


async def reload_catalog(rt: Runtime, *, actor: str, request_id: str | None = None) -> ReloadResult:
    """Swap in the catalog file's current content and audit it; CatalogError leaves all as it was."""
    new = load_catalog(rt.settings.tiers)
    if rt.settings.workers > 1 and new.local_tiers():  # as `kynsey serve --workers N` refuses them at start
        raise CatalogError(new.source, f"with {rt.settings.workers} worker processes each would load its own copy "
                           "of a local model; serve it with Ollama or llama-server instead", tier=new.local_tiers()[0])
    async with rt.sessions() as db:
        await check_catalog_keeps_plans(db, new)  # a plan users are on may not disappear
    async with rt.reload_lock:
        return await _swap_in(rt, new, actor=actor, request_id=request_id)


async def _swap_in(rt: Runtime, new: Catalog, *, actor: str, request_id: str | None) -> ReloadResult:
    old, current = rt.snapshot()
    rebuilt = [n for n in new.backends if n not in old.backends or _backend_key(old, n) != _backend_key(new, n)]
    fresh = {}
    for name in rebuilt:  # off the event loop: a local backend looks for model files on disk
        fresh[name] = await asyncio.to_thread(build_backend, name, new.backends[name], new, rt.settings)
    retired = [b for n, b in current.items() if n not in new.backends or n in rebuilt]
    rt.swap_catalog(new, {n: fresh.get(n) or current[n] for n in new.backends})  # copy on write
    for backend in retired:
        rt.spawn(_retire(rt, backend), f"retiring backend {backend.name}")
    await rt.monitor.refresh()
    result = ReloadResult(new.source, list(new.tiers), rebuilt)
    async with rt.sessions() as db:
        details = {"source": result.source, "tiers": result.tiers, "rebuilt_backends": rebuilt}
        await append(db, AuditRecord(actor=actor, action="catalog_reload", result="ok", request_id=request_id, details=details))
    log.info("catalog reloaded from %s: tiers %s, rebuilt backends %s", new.source, result.tiers, rebuilt)
    return result


async def _retire(rt: Runtime, backend: Backend) -> None:
    """Close a replaced backend once no request can still use it: requests that took it
    before the swap lease its models within a database round trip (bounded by the
    database timeouts), then hold them to the end of their stream (at most a read timeout)."""
    try:
        await asyncio.sleep(rt.settings.db_connect_timeout + rt.settings.db_statement_timeout)
        models = {m for (b, m) in rt.leases.held() if b == backend.name}
        async with asyncio.timeout(rt.settings.read_timeout):
            for model in models:
                await rt.leases.wait_idle(backend.name, model)
    except TimeoutError:
        pass
    finally:  # at shutdown too (this task is cancelled then)
        await backend.aclose()


class CatalogWatcher:
    """Reload when the catalog file's modification time changes."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.mtime = self._mtime()

    def _mtime(self) -> float | None:
        path = self.rt.settings.tiers
        try:
            return path.stat().st_mtime if path else None
        except OSError:
            return None

    async def check(self) -> None:
        mtime = self._mtime()
        if mtime is None or mtime == self.mtime:
            return
        self.mtime = mtime
        try:
            await reload_catalog(self.rt, actor="system")
        except CatalogError as exc:
            log.error("the changed catalog is invalid; still serving the previous one: %s", exc)
