"""Per backend-and-model circuit breakers (SPEC F6).

Closed: requests flow. After ``threshold`` consecutive failures the circuit
opens for ``cooldown`` seconds and the tier shows 'degraded'. After the
cooldown one probe request is let through (half-open): success closes the
circuit, failure opens it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import orjson

from kynsey.cluster import model_field, split_field

State = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class Circuit:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class Circuits:
    def __init__(self, threshold: int, cooldown: float, clock=time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._circuits: dict[tuple[str, str], Circuit] = {}

    def state(self, backend: str, model: str) -> State:
        circuit = self._circuits.get((backend, model))
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if self._clock() - circuit.opened_at < self.cooldown:
            return "open"
        return "half_open"

    def is_open(self, backend: str, model: str) -> bool:
        return self.state(backend, model) == "open"

    def allow(self, backend: str, model: str) -> bool:
        """May a request go to this model now? Takes the one probe slot when half-open."""
        state = self.state(backend, model)
        if state == "closed":
            return True
        if state == "open":
            return False
        circuit = self._circuits[(backend, model)]
        if circuit.probing:
            return False
        circuit.probing = True
        return True

    def failing(self, backend: str, model: str) -> bool:
        """Has this model failed since its last success?"""
        return (backend, model) in self._circuits

    def recovered(self, backend: str, model: str) -> None:
        """Its backend answers with the model again: an open circuit lets one trial through now."""
        circuit = self._circuits.get((backend, model))
        if circuit is not None and self.state(backend, model) == "open":
            circuit.opened_at = self._clock() - self.cooldown

    def success(self, backend: str, model: str) -> None:
        self._circuits.pop((backend, model), None)

    def failure(self, backend: str, model: str) -> bool:
        """Record a failure; True when this failure opened (or re-opened) the circuit."""
        circuit = self._circuits.setdefault((backend, model), Circuit())
        circuit.failures += 1
        reopen = circuit.opened_at is not None and circuit.probing
        circuit.probing = False
        if reopen or (circuit.opened_at is None and circuit.failures >= self.threshold):
            circuit.opened_at = self._clock()
            return True
        return False

    def snapshot(self) -> dict[tuple[str, str], State]:
        return {key: self.state(*key) for key in self._circuits}


# One circuit's change, applied in Redis atomically; the new state goes to every instance.
# KEYS[1] the circuits hash; ARGV: field, op, now (wall clock), threshold, cooldown, channel.
CIRCUIT_EVENT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local c = {failures = 0, opened_at = false, probing = false}
if raw then c = cjson.decode(raw) end
local op, now, threshold, cooldown = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local opened = 0
if op == 'success' then
  if not raw then return 0 end
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[6], cjson.encode({ARGV[1], false}))
  return 0
elseif op == 'failure' then
  c.failures = c.failures + 1
  local reopen = c.opened_at and c.probing
  c.probing = false
  if reopen or (not c.opened_at and c.failures >= threshold) then
    c.opened_at = now
    opened = 1
  end
elseif op == 'recovered' then
  if not c.opened_at or now - c.opened_at >= cooldown then return 0 end
  c.opened_at = now - cooldown
elseif op == 'probe' then
  if not c.opened_at or c.probing or now - c.opened_at < cooldown then return 0 end
  c.probing = true
end
local out = cjson.encode(c)
redis.call('HSET', KEYS[1], ARGV[1], out)
redis.call('PUBLISH', ARGV[6], cjson.encode({ARGV[1], c}))
return opened
"""


class SharedCircuits(Circuits):
    """Circuits every instance shares through Redis (``kynsey/cluster.py``), with the same API.

    Reads come from this instance's mirror; each change is applied here at once and
    sent to Redis in the background, where one script applies it to the shared state
    and publishes the result to every instance (this one too). A poll every
    ``POLL_SECONDS`` repairs a mirror that missed a message. While Redis fails the
    circuits are this instance's own, as without Redis.
    """

    def __init__(self, threshold: int, cooldown: float, cluster, clock=time.monotonic, wall=time.time) -> None:
        super().__init__(threshold, cooldown, clock)
        self.cluster = cluster
        self._wall = wall
        self._hash = cluster.key("circuits")
        self._script = cluster.script(CIRCUIT_EVENT)
        cluster.on("circuits", self._message)
        cluster.every_poll(self._poll)

    def allow(self, backend: str, model: str) -> bool:
        probe = self.state(backend, model) == "half_open"
        allowed = super().allow(backend, model)
        if allowed and probe:
            self._send("probe", backend, model)
        return allowed

    def recovered(self, backend: str, model: str) -> None:
        if self.state(backend, model) == "open":
            self._send("recovered", backend, model)
        super().recovered(backend, model)

    def success(self, backend: str, model: str) -> None:
        if (backend, model) in self._circuits:  # a closed circuit costs no round trip
            self._send("success", backend, model)
        super().success(backend, model)

    def failure(self, backend: str, model: str) -> bool:
        self._send("failure", backend, model)
        return super().failure(backend, model)

    def _send(self, op: str, backend: str, model: str) -> None:
        args = [model_field(backend, model), op, repr(self._wall()), self.threshold, self.cooldown, self._hash]
        self.cluster.submit(lambda r: self._script(keys=[self._hash], args=args, client=r))

    def _message(self, message) -> None:
        field, state = message
        self._apply(field, state)

    def _apply(self, field: str, state) -> None:
        backend, model = split_field(field)
        if not state:
            self._circuits.pop((backend, model), None)
            return
        opened = state.get("opened_at")
        opened_at = None if not opened else self._clock() - max(0.0, self._wall() - float(opened))
        self._circuits[(backend, model)] = Circuit(int(state.get("failures", 0)), opened_at, bool(state.get("probing")))

    async def _poll(self, redis) -> None:
        raw = await redis.hgetall(self._hash)
        if self.cluster.pending:
            return  # a change of ours is on its way: the next poll sees it
        fields = {k.decode(): orjson.loads(v) for k, v in raw.items()}
        for key in list(self._circuits):
            if model_field(*key) not in fields:
                self._circuits.pop(key, None)
        for field, state in fields.items():
            self._apply(field, state)
