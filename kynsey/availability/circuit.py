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
