"""Per-target circuit breaker: a target that keeps failing is skipped for a cool-down.

closed --(threshold consecutive failures)--> open --(cool-down elapsed)--> half_open
half_open lets one trial through: success -> closed, failure -> open again.
The clock is injected so tests drive time without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False
    trial_at: float = 0.0


class CircuitBreakers:
    def __init__(
        self, failure_threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown_s
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def state(self, key: str) -> State:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if self._clock() - circuit.opened_at < self._cooldown:
            return "open"
        return "half_open"

    def is_open(self, key: str) -> bool:
        return self.state(key) == "open"

    def allow(self, key: str) -> bool:
        """May a request go to this target now? Claims the single half-open trial."""
        state = self.state(key)
        if state == "closed":
            return True
        if state == "open":
            return False
        circuit = self._circuits[key]
        now = self._clock()
        # A trial that never reported back (cancelled) must not wedge the target.
        if circuit.trial_in_flight and now - circuit.trial_at < self._cooldown:
            return False
        circuit.trial_in_flight = True
        circuit.trial_at = now
        return True

    def record_success(self, key: str) -> None:
        circuit = self._circuits.get(key)
        if circuit is not None:
            circuit.failures = 0
            circuit.opened_at = None
            circuit.trial_in_flight = False

    def release(self, key: str) -> None:
        """The call claimed by `allow` never reached the target: the next one may try instead."""
        circuit = self._circuits.get(key)
        if circuit is not None:
            circuit.trial_in_flight = False

    def record_failure(self, key: str) -> bool:
        """Count a failure; True when this failure opened (or re-opened) the circuit."""
        circuit = self._circuits.setdefault(key, _Circuit())
        was_half_open = circuit.trial_in_flight
        circuit.trial_in_flight = False
        circuit.failures += 1
        if was_half_open or (circuit.opened_at is None and circuit.failures >= self._threshold):
            circuit.opened_at = self._clock()
            return True
        return False

    def cooling(self) -> list[str]:
        return [key for key in self._circuits if self.state(key) == "open"]
