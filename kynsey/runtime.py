"""Everything a running Kynsey holds, built once at start-up and closed at the end.

Routes and commands reach the services through this one object; it is not a
bag of copied settings: the settings stay frozen, and the only thing that
changes at run time is which catalog is current (a reload swaps it whole).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from kynsey.accounts.callers import Callers
from kynsey.availability.circuit import Circuits, SharedCircuits
from kynsey.availability.leases import ModelLeases
from kynsey.availability.monitor import StatusMonitor
from kynsey.availability.status import TierStatus, tier_status
from kynsey.availability.warmup import Warmer
from kynsey.backends import Backend, build_backends
from kynsey.catalog import Catalog, TierProfile, load_catalog
from kynsey.chat.live import LiveReplies
from kynsey.chat.persist import FINAL_SAVE_WAIT, ReplyStore
from kynsey.chat.relay import ReplyRelay
from kynsey.cluster import Cluster
from kynsey.metrics import Metrics
from kynsey.ratelimit import RateLimiter, make_storage
from kynsey.rollout.flags import Flags
from kynsey.rollout.guard import Guard
from kynsey.settings import Settings
from kynsey.storage.db import make_engine, make_sessionmaker
from kynsey.storage.jobs import Jobs, make_jobs

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    jobs: Jobs
    backends: dict[str, Backend]
    monitor: StatusMonitor
    circuits: Circuits
    warmer: Warmer
    limiter: RateLimiter
    flags: Flags
    callers: Callers
    guard: Guard
    live: LiveReplies
    replies: ReplyStore
    cluster: Cluster
    relay: ReplyRelay
    metrics: Metrics = field(default_factory=Metrics)
    leases: ModelLeases = field(default_factory=ModelLeases)
    tasks: list[asyncio.Task] = field(default_factory=list)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def snapshot(self) -> tuple[Catalog, dict[str, Backend]]:
        """The current catalog and its backends, consistent with each other: a request
        takes them once and uses them to its end, whatever a reload does meanwhile."""
        return self.catalog, self.backends

    def spawn(self, work: Awaitable, what: str) -> asyncio.Task:
        """Run ``work`` in the background: tracked (cancelled at shutdown), its failure logged."""
        task = asyncio.ensure_future(work)
        self.tasks.append(task)

        def done(t: asyncio.Task) -> None:
            self.tasks.remove(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %s", what, t.exception())

        task.add_done_callback(done)
        return task

    def swap_catalog(self, catalog: Catalog, backends: dict[str, Backend]) -> None:
        """Make ``catalog`` and ``backends`` current at once (a reload; copy on write)."""
        self.catalog, self.backends = catalog, backends
        self.monitor.backends = self.warmer.backends = backends

    def tier_status(self, tier: TierProfile) -> TierStatus:
        backend = self.backends[tier.backend]
        model = backend.canonical(tier.model_id)
        return tier_status(
            tier,
            backend,
            warming=self.warmer.is_warming(tier),
            circuit_open=self.circuits.is_open(tier.backend, model),
        )

    async def start(self) -> None:
        """Begin background work: status refresh, the warm pool, saving replies, the database's upkeep."""
        self.warmer.listeners.append(
            lambda tier, load_ms, error: self.metrics.warmup(
                tier.model_id, error is None, load_ms / 1000 if load_ms is not None else None
            )
        )
        self.monitor.on_refresh(self._half_open_recovered)
        self.monitor.on_refresh(lambda: self.warmer.keep_warm(self.catalog))
        self.monitor.on_refresh(self.flags.refresh)
        from kynsey.catalog.reload import CatalogWatcher

        self.monitor.on_refresh(CatalogWatcher(self).check)
        self.monitor.start()
        await self.cluster.start()
        self.tasks.append(asyncio.create_task(self.replies.run_forever(), name="kynsey-reply-persistence"))
        self.tasks.append(asyncio.create_task(self.jobs.run_forever(), name="kynsey-database-upkeep"))

    async def _half_open_recovered(self) -> None:
        """A probe that finds a model's backend up with the model lets one trial request through at once,
        instead of leaving its tier 'degraded' for the whole cooldown."""
        for backend_name, model in list(self.circuits.snapshot()):
            backend = self.backends.get(backend_name)
            if backend is not None and backend.snapshot.reachable and backend.snapshot.model(model) is not None:
                self.circuits.recovered(backend_name, model)

    async def shutdown_replies(self) -> None:
        """Let running replies finish within the grace period, then end them 'interrupted'."""
        await self.live.drain(self.settings.shutdown_grace)

    async def aclose(self) -> None:
        await self.shutdown_replies()
        await self.replies.close(timeout=self.settings.db_connect_timeout)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.monitor.stop()
        await self.flags.aclose()
        await self.warmer.stop()
        for backend in self.backends.values():
            await backend.aclose()
        await self.limiter.aclose()
        await self.guard.aclose()
        await self.relay.aclose()
        await self.cluster.aclose()
        await self.jobs.aclose()
        await self.engine.dispose()


def build_runtime(settings: Settings, catalog: Catalog | None = None) -> Runtime:
    catalog = catalog or load_catalog(settings.tiers)
    engine = make_engine(settings.effective_database_url, settings.db_limits)
    backends = build_backends(catalog, settings)
    monitor = StatusMonitor(backends, interval=settings.status_refresh, timeout=settings.status_timeout)
    sessions, metrics = make_sessionmaker(engine), Metrics()
    cluster = Cluster(settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout,
                      retry_seconds=settings.redis_retry_seconds, metrics=metrics)
    circuits: Circuits
    if cluster.shared:
        circuits = SharedCircuits(settings.circuit_failures, settings.circuit_cooldown, cluster)
    else:
        circuits = Circuits(settings.circuit_failures, settings.circuit_cooldown)
    warmer = Warmer(backends, monitor, circuits, cluster)
    flags = Flags(sessions, ttl=settings.flag_cache_seconds, metrics=metrics)
    guard = Guard(settings, flags, sessions, metrics, cluster=cluster)
    flags.listeners.append(guard.on_flag)
    jobs = make_jobs(settings.effective_database_url, engine)
    callers = Callers(settings.auth_cache_seconds)
    callers.watch(engine.sync_engine)  # every write to users, tokens and sessions goes through it
    live = LiveReplies()
    replies = ReplyStore(jobs, live, flush_seconds=settings.chat_flush_seconds, stale_seconds=settings.stream_stale_seconds)
    runtime = Runtime(
        settings=settings,
        catalog=catalog,
        engine=engine,
        sessions=sessions,
        jobs=jobs,
        backends=backends,
        monitor=monitor,
        circuits=circuits,
        warmer=warmer,
        limiter=RateLimiter(
            make_storage(settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout),
            timeout=settings.redis_timeout, retry_seconds=settings.redis_retry_seconds, metrics=metrics,
        ),
        flags=flags,
        callers=callers,
        guard=guard,
        live=live,
        replies=replies,
        cluster=cluster,
        relay=ReplyRelay(cluster, live, final_save_wait=FINAL_SAVE_WAIT),
        metrics=metrics,
    )
    return runtime
