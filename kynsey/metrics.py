"""Prometheus metrics (SPEC F11), one registry per running app.

Services call the small methods here; nothing else in Kynsey imports
prometheus_client, so the metric names live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
RATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.switches = Counter(
            "kynsey_switches_total", "Tier switch attempts by result", ["result", "from_tier", "to_tier"], registry=r
        )
        self.switch_seconds = Histogram(
            "kynsey_switch_seconds", "Time to answer a tier switch", ["result"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft_seconds = Histogram(
            "kynsey_ttft_seconds", "Time to first token of a reply", ["tier", "model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.tokens_per_second = Histogram(
            "kynsey_tokens_per_second", "Generation speed of a reply", ["tier", "model"], buckets=RATE_BUCKETS, registry=r
        )
        self.replies = Counter("kynsey_replies_total", "Replies by final status", ["tier", "model", "status"], registry=r)
        self.backend_errors = Counter(
            "kynsey_backend_errors_total", "Backend failures by kind", ["backend", "model", "kind"], registry=r
        )
        self.fallbacks = Counter(
            "kynsey_fallbacks_total", "Replies answered by a fallback tier", ["from_tier", "to_tier", "reason"], registry=r
        )
        self.circuit_state = Gauge(
            "kynsey_circuit_state", "Circuit state per model (0 closed, 1 half-open, 2 open)", ["backend", "model"], registry=r
        )
        self.warmups = Counter("kynsey_warmups_total", "Model warm-ups by result", ["model", "result"], registry=r)
        self.warmup_seconds = Histogram(
            "kynsey_warmup_seconds", "Time a model warm-up took", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.flag_enabled = Gauge("kynsey_flag_enabled", "Feature flag state (1 on/partial, 0 off)", ["flag"], registry=r)
        self.flag_percent = Gauge("kynsey_flag_rollout_percent", "Feature flag rollout percentage", ["flag"], registry=r)
        self.rollbacks = Counter("kynsey_rollbacks_total", "Automatic rollbacks by trigger", ["trigger"], registry=r)
        self.redis_errors = Counter(
            "kynsey_redis_errors_total", "Redis calls that failed or timed out (limits and shared state fell back to memory)", registry=r
        )
        self.ratelimit_fallback = Gauge(
            "kynsey_ratelimit_fallback", "1 while rate limits count in this instance's memory because Redis fails",
            registry=r,
        )
        self.cluster_fallback = Gauge(
            "kynsey_cluster_fallback", "1 while circuits, warm-ups, the rollback guard and live replies use this "
            "instance's own state because Redis fails", registry=r,
        )
        self.logins = Counter("kynsey_logins_total", "Login attempts by result (ok, failed, rate_limited)", ["result"], registry=r)
        self.compat_requests = Counter(
            "kynsey_compat_requests_total", "Chats through the OpenAI- and Ollama-compatible APIs by result (ok, "
            "fallback, or the error code)", ["api", "result"], registry=r,
        )

    def switch(self, result: str, from_tier: str, to_tier: str, seconds: float) -> None:
        self.switches.labels(result, from_tier, to_tier).inc()
        self.switch_seconds.labels(result).observe(seconds)

    def reply(self, tier: str, model: str, status: str, ttft_s: float | None, tokens_per_s: float | None) -> None:
        self.replies.labels(tier, model, status).inc()
        if ttft_s is not None:
            self.ttft_seconds.labels(tier, model).observe(ttft_s)
        if tokens_per_s:
            self.tokens_per_second.labels(tier, model).observe(tokens_per_s)

    def backend_error(self, backend: str, model: str, kind: str) -> None:
        self.backend_errors.labels(backend, model, kind).inc()

    def fallback(self, from_tier: str, to_tier: str, reason: str) -> None:
        self.fallbacks.labels(from_tier, to_tier, reason).inc()

    def circuit(self, backend: str, model: str, state: str) -> None:
        self.circuit_state.labels(backend, model).set(CIRCUIT_VALUES[state])

    def circuits(self, states: Iterable[tuple[str, str, str]]) -> None:
        """Set the gauge for every (backend, model, state); /metrics calls this at scrape time."""
        for backend, model, state in states:
            self.circuit(backend, model, state)

    def warmup(self, model: str, ok: bool, seconds: float | None) -> None:
        self.warmups.labels(model, "ok" if ok else "failed").inc()
        if seconds is not None:
            self.warmup_seconds.labels(model).observe(seconds)

    def flag(self, name: str, enabled: bool, percent: float) -> None:
        self.flag_enabled.labels(name).set(1 if enabled else 0)
        self.flag_percent.labels(name).set(percent)

    def rollback(self, trigger: str) -> None:
        self.rollbacks.labels(trigger).inc()

    def redis_error(self) -> None:
        self.redis_errors.inc()

    def login(self, result: str) -> None:
        self.logins.labels(result).inc()

    def compat_request(self, api: str, result: str) -> None:
        self.compat_requests.labels(api, result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
