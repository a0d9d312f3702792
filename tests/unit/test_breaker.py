"""The circuit breaker's state machine, driven by a fake clock (time is an input here, not a sleep)."""

from __future__ import annotations

import pytest

from aperio_plugins import ConfigurationError
from aperio_plugins._breaker import BreakerPolicy, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def transitions():
    return []


@pytest.fixture
def breaker(clock, transitions):
    policy = BreakerPolicy(failure_threshold=3, window_seconds=10, reset_timeout_seconds=5)
    return CircuitBreaker(policy, lambda old, new: transitions.append((old.value, new.value)), clock)


def test_opens_after_threshold_failures_within_the_window(breaker, transitions):
    for _ in range(2):
        breaker.record_failure()
    assert breaker.closed
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.closed
    assert not breaker.allow()
    assert transitions == [("closed", "open")]


def test_failures_outside_the_window_do_not_add_up(breaker, clock):
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 11
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_a_success_resets_the_count(breaker):
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_half_open_lets_exactly_one_probe_through(breaker, clock, transitions):
    for _ in range(3):
        breaker.record_failure()
    clock.now += 4.9
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.now += 0.2
    assert breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow()  # a second caller while the probe is in flight
    breaker.record_success()
    assert breaker.closed
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_opens_it_again_for_a_full_timeout(breaker, clock):
    for _ in range(3):
        breaker.record_failure()
    clock.now += 5
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


@pytest.mark.parametrize("policy", [{"failure_threshold": 0}, {"window_seconds": 0}, {"reset_timeout_seconds": -1}])
def test_nonsense_policies_are_refused(policy):
    with pytest.raises(ConfigurationError, match="must be positive"):
        BreakerPolicy(**policy)
