"""What operators watch: /metrics and the structured logs (SPEC F11)."""

from __future__ import annotations

import json
import logging

from prometheus_client.parser import text_string_to_metric_families

from kynsey.logs import JsonFormatter, RequestIdFilter
from kynsey.rollout.flags import FLAG

STANDARD, PRO, CODE = "llama3.2:3b-instruct-fp16", "qwen2.5:14b-instruct", "qwen2.5-coder:7b-instruct"


def scrape(server) -> dict[tuple[str, frozenset], float]:
    resp = server.client().get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_switches_latency_warmups_flag_and_circuits_are_exported(start_server, fake_ollama):
    # No background refresh: a probe that finds the backend up half-opens an open circuit at once.
    server = start_server(ollama_host=fake_ollama.url, circuit_failures=1, status_refresh=3600)
    server.refresh_status()
    alice = server.client(server.add_user("alice", "pro"))
    sam = server.client(server.add_user("sam", "standard"))
    assert alice.post("/api/models/tier", json={"tier": "code"}).json()["status"] == "ready"
    assert alice.post("/api/models/tier", json={"tier": "standard"}).json()["status"] == "ready"
    assert alice.post("/api/models/tier", json={"tier": "standard"}).json()["status"] == "unchanged"
    assert sam.post("/api/models/tier", json={"tier": "pro"}).status_code == 403
    fake_ollama.fail[PRO] = "load_fail"
    assert alice.post("/api/models/tier", json={"tier": "pro"}).status_code == 502

    m = scrape(server)
    switches = {
        (r, f, t): value(m, "kynsey_switches_total", result=r, from_tier=f, to_tier=t)
        for r, f, t in [
            ("ready", "standard", "code"),
            ("ready", "code", "standard"),
            ("unchanged", "standard", "standard"),
            ("denied", "standard", "pro"),
            ("failed", "standard", "pro"),
        ]
    }
    assert set(switches.values()) == {1.0}, switches
    assert value(m, "kynsey_switch_seconds_count", result="ready") == 2
    assert value(m, "kynsey_switch_seconds_sum", result="ready") > 0
    assert value(m, "kynsey_switch_seconds_bucket", result="ready", le="+Inf") == 2
    assert value(m, "kynsey_warmups_total", model=CODE, result="ok") == 1
    assert value(m, "kynsey_warmups_total", model=PRO, result="failed") == 1
    assert value(m, "kynsey_warmup_seconds_count", model=CODE) == 1
    assert value(m, "kynsey_flag_enabled", flag=FLAG) == 1
    assert value(m, "kynsey_flag_rollout_percent", flag=FLAG) == 100
    assert value(m, "kynsey_circuit_state", backend="ollama", model=PRO) == 2  # open
    assert value(m, "kynsey_circuit_state", backend="ollama", model=STANDARD) == 0
    assert value(m, "kynsey_rollbacks_total", trigger="switch_errors") == 0


def test_the_flag_gauges_follow_the_flag(server):
    admin = server.client(server.add_user("root", "pro", admin=True))
    admin.put(f"/api/admin/flags/{FLAG}", json={"percent": 25})
    m = scrape(server)
    assert (value(m, "kynsey_flag_enabled", flag=FLAG), value(m, "kynsey_flag_rollout_percent", flag=FLAG)) == (1, 25)
    admin.put(f"/api/admin/flags/{FLAG}", json={"state": "off"})
    m = scrape(server)
    assert (value(m, "kynsey_flag_enabled", flag=FLAG), value(m, "kynsey_flag_rollout_percent", flag=FLAG)) == (0, 0)


class Capture(logging.Handler):
    """The production handler's filter and formatter, writing to a list."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []
        self.addFilter(RequestIdFilter())
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_every_log_line_of_a_request_carries_its_id_and_each_switch_logs_one_line(server, fake_ollama):
    client = server.client(server.add_user("alice", "pro"))
    capture, logger = Capture(), logging.getLogger("kynsey")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(capture)
    try:
        assert client.post("/api/models/tier", json={"tier": "code"}, headers={"X-Request-ID": "req-one"}).status_code == 200
        fake_ollama.fail[PRO] = "load_fail"
        assert client.post("/api/models/tier", json={"tier": "pro"}, headers={"X-Request-ID": "req-two"}).status_code == 502
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)
    switches = [line for line in capture.lines if line.get("event") == "switch"]
    assert [(s["request_id"], s["user"], s["from_tier"], s["to_tier"], s["result"]) for s in switches] == [
        ("req-one", "alice", "standard", "code", "ready"),
        ("req-two", "alice", "code", "pro", "failed"),
    ]
    assert all(s["latency_ms"] > 0 and s["level"] == "info" for s in switches)
    # A record from deeper down (the warm-up that failed) carries the request id too.
    [warm] = [line for line in capture.lines if line["logger"] == "kynsey.availability.warmup"]
    assert warm["request_id"] == "req-two" and PRO in warm["msg"]
