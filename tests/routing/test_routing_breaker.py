"""Circuit breaker state machine, driven by a fake clock instead of sleeping."""

from __future__ import annotations

import pytest

from routing.breaker import CircuitBreakers

KEY = "up/model"
COOLDOWN = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breakers(clock: FakeClock) -> CircuitBreakers:
    return CircuitBreakers(failure_threshold=3, cooldown_s=COOLDOWN, clock=clock)


def _open(breakers: CircuitBreakers) -> None:
    for _ in range(3):
        breakers.record_failure(KEY)
    assert breakers.state(KEY) == "open"


def test_unknown_target_is_closed(breakers: CircuitBreakers) -> None:
    assert breakers.state(KEY) == "closed"
    assert breakers.allow(KEY)
    assert breakers.cooling() == []
    # Success on a target never seen must not create state or fail.
    breakers.record_success(KEY)
    assert breakers.state(KEY) == "closed"


def test_opens_exactly_at_threshold(breakers: CircuitBreakers) -> None:
    assert breakers.record_failure(KEY) is False
    assert breakers.record_failure(KEY) is False
    assert breakers.state(KEY) == "closed"
    assert breakers.allow(KEY)
    assert breakers.record_failure(KEY) is True
    assert breakers.state(KEY) == "open"
    assert not breakers.allow(KEY)
    assert breakers.cooling() == [KEY]


def test_further_failures_while_open_do_not_reopen(breakers: CircuitBreakers, clock: FakeClock) -> None:
    _open(breakers)
    clock.advance(COOLDOWN - 1)
    # A late failure from a request sent before the circuit opened must not extend the cool-down.
    assert breakers.record_failure(KEY) is False
    clock.advance(1)
    assert breakers.state(KEY) == "half_open"


def test_success_resets_the_failure_count(breakers: CircuitBreakers) -> None:
    breakers.record_failure(KEY)
    breakers.record_failure(KEY)
    breakers.record_success(KEY)
    assert breakers.record_failure(KEY) is False
    assert breakers.record_failure(KEY) is False
    assert breakers.state(KEY) == "closed"


def test_targets_are_independent(breakers: CircuitBreakers) -> None:
    _open(breakers)
    assert breakers.state("other/model") == "closed"
    assert breakers.allow("other/model")
    assert breakers.cooling() == [KEY]


def test_half_open_after_cooldown_allows_single_trial(breakers: CircuitBreakers, clock: FakeClock) -> None:
    _open(breakers)
    clock.advance(COOLDOWN - 0.001)
    assert breakers.state(KEY) == "open"
    assert not breakers.allow(KEY)
    clock.advance(0.001)
    assert breakers.state(KEY) == "half_open"
    assert breakers.cooling() == []
    assert breakers.allow(KEY) is True
    # The trial is claimed: concurrent requests keep away until it reports.
    assert breakers.allow(KEY) is False
    clock.advance(COOLDOWN / 2)
    assert breakers.allow(KEY) is False


def test_trial_success_closes(breakers: CircuitBreakers, clock: FakeClock) -> None:
    _open(breakers)
    clock.advance(COOLDOWN)
    assert breakers.allow(KEY)
    breakers.record_success(KEY)
    assert breakers.state(KEY) == "closed"
    assert breakers.allow(KEY)
    assert breakers.allow(KEY)
    # Closed again from scratch: it takes the full threshold to reopen.
    assert breakers.record_failure(KEY) is False
    assert breakers.record_failure(KEY) is False
    assert breakers.record_failure(KEY) is True


def test_trial_failure_reopens_for_a_fresh_cooldown(breakers: CircuitBreakers, clock: FakeClock) -> None:
    _open(breakers)
    clock.advance(COOLDOWN + 5)
    assert breakers.allow(KEY)
    # One failure is enough in half-open, whatever the threshold.
    assert breakers.record_failure(KEY) is True
    assert breakers.state(KEY) == "open"
    assert breakers.cooling() == [KEY]
    clock.advance(COOLDOWN - 1)
    assert not breakers.allow(KEY)
    clock.advance(1)
    assert breakers.state(KEY) == "half_open"
    assert breakers.allow(KEY)


def test_trial_that_never_reports_does_not_wedge(breakers: CircuitBreakers, clock: FakeClock) -> None:
    _open(breakers)
    clock.advance(COOLDOWN)
    assert breakers.allow(KEY)  # this trial is cancelled and never reports
    clock.advance(COOLDOWN - 1)
    assert not breakers.allow(KEY)
    clock.advance(1)
    # After another cool-down a new trial may go.
    assert breakers.allow(KEY)
    assert not breakers.allow(KEY)
    breakers.record_success(KEY)
    assert breakers.state(KEY) == "closed"


def test_threshold_one(clock: FakeClock) -> None:
    breakers = CircuitBreakers(failure_threshold=1, cooldown_s=5, clock=clock)
    assert breakers.record_failure(KEY) is True
    assert not breakers.allow(KEY)
    clock.advance(5)
    assert breakers.allow(KEY)
