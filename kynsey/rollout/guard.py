"""The automatic rollback guard (SPEC F12).

It watches a sliding window of the traffic of every instance that shares its
Redis (``kynsey/cluster.py``: each sample is recorded here and published; the
others' samples arrive by pub/sub and join the same windows), else of this
instance alone:

- switch errors: failures of valid switches (result ``failed``,
  ``unavailable`` or ``error``) over the valid switch attempts in the window,
  judged once there are ``guard_min_switches`` attempts. Refusals that are
  the user's own business (``denied``, ``rate_limited``, ``unknown_tier``,
  ``feature_disabled``) are neither failures nor attempts.
- chat latency: the median time to first token of the replies in the window
  (those after the baseline) against the baseline, the median of the first
  ``guard_baseline_replies`` replies after start or after a re-enable; judged
  once there are ``guard_min_replies`` replies. The window holds the newest
  ``MAX_WINDOW_REPLIES`` at most: a fleet's busiest minutes add precision to
  the median no more, only memory and a dearer insert per reply.

A breach trips the guard only once it has held for ``guard_sustain_seconds``,
re-checked on every new sample; load noise that passes sooner does not turn
switching off for everyone.

When either trips, it turns ``model_switching`` off (the kill switch),
reverts every user's stored tier to the default, writes one audit entry
(action ``rollback``, actor ``guard``) with the figures, counts the rollback
metric and remembers it in the flag's row. It fires once: it stays quiet until
an admin turns the flag back on, which resets its windows and baseline.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from kynsey.audit import AuditRecord, append
from kynsey.cluster import Cluster
from kynsey.metrics import Metrics
from kynsey.rollout.flags import FLAG, Flags, FlagState
from kynsey.settings import Settings
from kynsey.storage.dml import rows_changed
from kynsey.storage.models import User

log = logging.getLogger(__name__)

USER_SIDE = frozenset({"denied", "rate_limited", "unknown_tier", "feature_disabled"})
FAILED = frozenset({"failed", "unavailable", "error"})
TRIGGERS = ("switch_errors", "ttft")
_UNSEEN = object()
MAX_WINDOW_REPLIES = 10_000  # 33 replies a second over the default 300 s window


def _median(ordered: list[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class Guard:
    def __init__(
        self,
        settings: Settings,
        flags: Flags,
        sessions: async_sessionmaker[AsyncSession],
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        cluster: Cluster | None = None,
    ) -> None:
        self.window = settings.guard_window_seconds
        self.min_switches = settings.guard_min_switches
        self.max_error_rate = settings.guard_max_error_rate
        self.max_degradation = settings.guard_ttft_degradation
        self.min_replies = settings.guard_min_replies
        self.baseline_size = settings.guard_baseline_replies
        self.sustain = settings.guard_sustain_seconds
        self.flags = flags
        self.sessions = sessions
        self.metrics = metrics
        self._clock = clock
        self.state = "armed"  # armed | tripping | tripped
        self.last_rollback: dict | None = None
        self._enabled_at: Any = _UNSEEN
        self._task: asyncio.Task | None = None
        self.cluster = cluster or Cluster(None)
        self.cluster.on("guard", self._remote)
        for trigger in TRIGGERS:  # show the counter at 0 before the first rollback
            metrics.rollbacks.labels(trigger)
        self.reset()

    def reset(self) -> None:
        """Empty the windows and start a new baseline (at start and on re-enable)."""
        self._switches: deque[tuple[float, bool]] = deque()
        self._failures = 0
        self._replies: deque[tuple[float, float]] = deque()
        self._sorted: list[float] = []
        self._baseline: list[float] = []
        self.baseline_ms: float | None = None
        self._breach_since: dict[str, float] = {}  # trigger -> when its current breach began
        if self.state == "tripped":
            self.state = "armed"

    # -- what the services report -------------------------------------------------

    def record_switch(self, result: str) -> None:
        """Count one switch attempt by its audit result (the switch service calls this)."""
        if result in USER_SIDE or self.state != "armed":
            return
        failed = result in FAILED
        self.cluster.publish("guard", {"from": self.cluster.instance, "switch_failed": failed})
        self._switch(failed)

    def record_reply(self, ttft_ms: float) -> None:
        """Count one reply's time to first token in ms (the chat service calls this)."""
        if self.state != "armed" or not math.isfinite(ttft_ms) or ttft_ms < 0:
            return
        self.cluster.publish("guard", {"from": self.cluster.instance, "ttft_ms": ttft_ms})
        self._reply(ttft_ms)

    def _remote(self, sample: dict) -> None:
        """Another instance's sample: it joins the windows as if it happened here now."""
        if sample.get("from") == self.cluster.instance or self.state != "armed":
            return
        if "switch_failed" in sample:
            self._switch(bool(sample["switch_failed"]))
        elif isinstance(ttft := sample.get("ttft_ms"), (int, float)) and math.isfinite(ttft) and ttft >= 0:
            self._reply(float(ttft))

    def _switch(self, failed: bool) -> None:
        now = self._clock()
        self._switches.append((now, failed))
        self._failures += failed
        self._prune(now)
        total = len(self._switches)
        breached = total >= self.min_switches and self._failures / total > self.max_error_rate
        self._judge("switch_errors", breached, now, self._switch_figures)

    def _reply(self, ttft_ms: float) -> None:
        if self.baseline_ms is None:
            self._baseline.append(ttft_ms)
            if len(self._baseline) >= self.baseline_size:
                self.baseline_ms = _median(sorted(self._baseline))
            return
        now = self._clock()
        self._replies.append((now, ttft_ms))
        bisect.insort(self._sorted, ttft_ms)
        self._prune(now)
        breached = len(self._replies) >= self.min_replies and _median(self._sorted) > self.baseline_ms * (
            1 + self.max_degradation
        )
        self._judge("ttft", breached, now, self._ttft_figures)

    def _judge(self, trigger: str, breached: bool, now: float, figures: Callable[[], dict[str, Any]]) -> None:
        """Trip once a breach has held for ``sustain`` seconds, re-checked on every sample: a burst
        of load noise that passes sooner (the window's median falls back) starts over."""
        if not breached:
            self._breach_since.pop(trigger, None)
            return
        since = self._breach_since.setdefault(trigger, now)
        if now - since >= self.sustain:
            self._trip(trigger, {**figures(), "sustained_seconds": round(now - since, 1)})

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        while self._switches and self._switches[0][0] < horizon:
            self._failures -= self._switches.popleft()[1]
        while self._replies and (self._replies[0][0] < horizon or len(self._replies) > MAX_WINDOW_REPLIES):
            _, value = self._replies.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, value)]

    # -- figures --------------------------------------------------------------------

    def _switch_figures(self) -> dict[str, Any]:
        total = len(self._switches)
        return {
            "window_seconds": self.window,
            "attempts": total,
            "failures": self._failures,
            "error_rate": round(self._failures / total, 4) if total else None,
            "max_error_rate": self.max_error_rate,
            "min_switches": self.min_switches,
        }

    def _ttft_figures(self) -> dict[str, Any]:
        current = _median(self._sorted) if self._sorted else None
        return {
            "window_seconds": self.window,
            "replies": len(self._replies),
            "baseline_ttft_ms": round(self.baseline_ms, 1) if self.baseline_ms is not None else None,
            "baseline_replies": len(self._baseline),
            "current_ttft_ms": round(current, 1) if current is not None else None,
            "degradation": round(current / self.baseline_ms - 1, 4) if current and self.baseline_ms else None,
            "max_degradation": self.max_degradation,
            "min_replies": self.min_replies,
        }

    def status(self) -> dict[str, Any]:
        """The live figures (the admin dashboard shows them): every instance's with Redis."""
        self._prune(self._clock())
        return {
            "state": self.state,
            "switches": self._switch_figures(),
            "ttft": self._ttft_figures(),
            "last_rollback": self.last_rollback,
        }

    # -- tripping -------------------------------------------------------------------

    def on_flag(self, flag: FlagState) -> None:
        """Flags calls this on every fresh read: a re-enable re-arms the guard."""
        if flag.name != FLAG:
            return
        if self._enabled_at is _UNSEEN:
            self._enabled_at = flag.enabled_at
        elif flag.enabled_at != self._enabled_at:
            self._enabled_at = flag.enabled_at
            if flag.enabled:
                self.reset()

    def _trip(self, trigger: str, figures: dict[str, Any]) -> None:
        flag = self.flags.peek(FLAG)
        if flag is not None and not flag.enabled:
            return  # already off: there is nothing to roll back
        self.state = "tripping"
        self._task = asyncio.get_running_loop().create_task(self._rollback(trigger, figures), name="kynsey-rollback")

    async def _rollback(self, trigger: str, figures: dict[str, Any]) -> None:
        reason = describe(trigger, figures)
        record = {"at": datetime.now(UTC).isoformat(), "trigger": trigger, "reason": reason, "figures": figures}
        try:
            won, reverted = await self._kill(record)
        except (SQLAlchemyError, OSError):
            log.exception("the automatic rollback could not be written; the guard stays armed")
            self.state = "armed"
            return
        self.state = "tripped"
        self.last_rollback = {**record, "users_reverted": reverted} if won else self.last_rollback
        if won:
            self.metrics.rollback(trigger)
            log.error("automatic rollback: %s", reason, extra={"event": "rollback", "trigger": trigger, **figures})
        await self.flags.reload(FLAG)

    async def _kill(self, record: dict) -> tuple[bool, int]:
        async with self.sessions() as db:
            if not await self.flags.kill(db, FLAG, record):
                await db.rollback()
                return False, 0
            reverted = await rows_changed(db, update(User).where(User.active_tier.is_not(None)).values(active_tier=None))
            details = {"trigger": record["trigger"], **record["figures"], "users_reverted": reverted}
            await append(
                db,
                AuditRecord(actor="guard", action="rollback", subject=FLAG, result="rolled_back",
                            reason=record["reason"], details=details),
            )
        return True, reverted

    async def aclose(self) -> None:
        """Let a rollback that is being written finish."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def describe(trigger: str, f: dict[str, Any]) -> str:
    """The audit entry's reason: the trigger with its figures."""
    if trigger == "switch_errors":
        return (
            f"switch error rate {f['error_rate']:.2%} ({f['failures']} of {f['attempts']} switch attempts failed "
            f"in the last {f['window_seconds']:g} s) exceeds {f['max_error_rate']:.2%}"
        )
    return (
        f"median time to first token {f['current_ttft_ms']:g} ms over {f['replies']} replies in the last "
        f"{f['window_seconds']:g} s is {f['degradation']:.0%} above the baseline {f['baseline_ttft_ms']:g} ms "
        f"(median of the first {f['baseline_replies']} replies); the limit is {f['max_degradation']:.0%}"
    )
