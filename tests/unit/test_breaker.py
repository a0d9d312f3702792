"""The circuit breaker's state machine, driven by a fake clock (time is an input here, not a sleep).

The examples first, then a property-based test: hypothesis drives the breaker and a small
reference model with the same random calls, outcomes and clock moves, and they must agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from aperio_plugins import ConfigurationError
from aperio_plugins._breaker import BreakerPolicy, BreakerState, CircuitBreaker, incident_of
from aperio_plugins.errors import WorkerCrashedError


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


def open_it(breaker):
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_opens_after_threshold_failures_within_the_window(breaker, transitions):
    for _ in range(2):
        breaker.record_failure()
    assert breaker.closed
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.closed
    assert not breaker.permit().granted
    assert transitions == [("closed", "open")]


def test_failures_outside_the_window_do_not_add_up(breaker, clock):
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 11
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


def test_a_success_while_closed_does_not_forgive_failures_within_the_window(breaker):
    # N failures within the window open the breaker, whatever succeeded in between.
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success(breaker.permit())
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_failures_of_one_incident_count_once(breaker):
    for _ in range(5):  # five calls in flight when worker generation 7 died
        breaker.record_failure(incident=("worker", 7))
    assert breaker.closed
    breaker.record_failure(incident=("worker", 8))
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_an_incident_counts_again_once_it_left_the_window(breaker, clock):
    breaker.record_failure(incident="x")
    clock.now += 11
    breaker.record_failure(incident="x")
    breaker.record_failure(incident="y")
    assert breaker.closed
    breaker.record_failure(incident="z")
    assert breaker.state is BreakerState.OPEN


def test_half_open_lets_exactly_one_probe_through(breaker, clock, transitions):
    open_it(breaker)
    clock.now += 4.9
    refused = breaker.permit()
    assert not refused.granted
    assert refused.retry_in == pytest.approx(0.1)
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.now += 0.2
    probe = breaker.permit()
    assert probe.granted
    assert probe.probe
    assert breaker.state is BreakerState.HALF_OPEN
    second = breaker.permit()  # a second caller while the probe is in flight
    assert not second.granted
    assert second.retry_in == 0.0
    breaker.record_success(probe)
    assert breaker.closed
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_opens_it_again_for_a_full_timeout(breaker, clock):
    open_it(breaker)
    clock.now += 5
    probe = breaker.permit()
    assert probe.probe
    clock.now += 2  # the probe took two seconds to fail
    breaker.record_failure(probe)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_in() == pytest.approx(5.0)  # counted from the probe's failure, not from the opening
    clock.now += 4
    assert not breaker.permit().granted
    clock.now += 1
    assert breaker.permit().probe


def test_a_call_that_started_before_the_breaker_opened_does_not_close_it(breaker, clock):
    early = breaker.permit()  # granted while closed
    open_it(breaker)
    breaker.record_success(early)
    assert breaker.state is BreakerState.OPEN
    clock.now += 5
    probe = breaker.permit()
    breaker.record_success(early)  # still not: only the probe's success closes it
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success(probe)
    assert breaker.closed


def test_late_failures_while_open_do_not_push_the_next_probe_away(breaker, clock):
    open_it(breaker)
    clock.now += 3
    for _ in range(10):  # calls that started before it opened, failing late
        breaker.record_failure()
    assert breaker.retry_in() == pytest.approx(2.0)
    clock.now += 2
    probe = breaker.permit()
    breaker.record_failure()  # a late failure while the probe is in flight
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success(probe)
    assert breaker.closed


def test_a_released_probe_lets_the_next_caller_probe(breaker, clock):
    open_it(breaker)
    clock.now += 5
    probe = breaker.permit()
    breaker.release(probe)  # interrupted: no verdict
    assert breaker.state is BreakerState.HALF_OPEN
    second = breaker.permit()
    assert second.probe
    breaker.record_success(probe)  # the released probe's word no longer counts
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_success(second)
    assert breaker.closed


def test_a_worker_crash_names_its_incident():
    error = WorkerCrashedError("gone", plugin_id="acme.x", returncode=-9, generation=3)
    assert incident_of(error) == ("worker", 3)
    assert incident_of(WorkerCrashedError("gone")) is None
    assert incident_of(ValueError("x")) is None


@pytest.mark.parametrize("policy", [{"failure_threshold": 0}, {"window_seconds": 0}, {"reset_timeout_seconds": -1}])
def test_nonsense_policies_are_refused(policy):
    with pytest.raises(ConfigurationError, match="must be positive"):
        BreakerPolicy(**policy)


# -- the property-based test ------------------------------------------------------------------


@dataclass
class Model:
    """What the breaker must do, written as plainly as possible: the docs' state diagram."""

    threshold: int
    window: float
    reset: float
    state: str = "closed"
    epoch: int = 0  # one more each time the breaker opens: failures count within one closed period
    counted: list[tuple[float, int, object]] = field(default_factory=list)  # (when, epoch, incident)
    opened_at: float = 0.0
    probe: int | None = None  # the call id of the probe in flight
    transitions: list[tuple[str, str]] = field(default_factory=list)

    def move(self, new: str) -> None:
        if new != self.state:
            self.transitions.append((self.state, new))
            self.state = new

    def permit(self, call: int, now: float) -> tuple[bool, bool, float]:
        """(granted, probe, retry_in)"""
        if self.state == "closed":
            return True, False, 0.0
        if self.state == "open":
            if now < self.opened_at + self.reset:
                return False, False, self.opened_at + self.reset - now
            self.move("half_open")
        if self.probe is not None:
            return False, False, 0.0
        self.probe = call
        return True, True, 0.0

    def success(self, call: int) -> None:
        if call == self.probe:
            self.probe = None
            self.move("closed")

    def failure(self, call: int | None, now: float, incident: object) -> None:
        if call is not None and call == self.probe:
            self.probe = None
            self.opened_at = now
            self.move("open")
            return
        if self.state != "closed":
            return
        recent = [(when, epoch, seen) for when, epoch, seen in self.counted if when >= now - self.window]
        if incident is not None and any(seen == incident for _, _, seen in recent):
            return
        self.counted.append((now, self.epoch, incident))
        if sum(1 for when, epoch, _ in recent if epoch == self.epoch) + 1 >= self.threshold:
            self.epoch += 1
            self.opened_at = now
            self.move("open")

    def release(self, call: int) -> None:
        if call == self.probe:
            self.probe = None


@dataclass
class Call:
    id: int
    permit: object  # the breaker's Permit, or None for a call made on the fast path while closed


class BreakerMachine(RuleBasedStateMachine):
    calls = Bundle("calls")

    @initialize(
        threshold=st.integers(1, 4),
        window=st.sampled_from([2.0, 5.0, 30.0]),
        reset=st.sampled_from([1.0, 3.0]),
    )
    def start(self, threshold: int, window: float, reset: float) -> None:
        self.clock = Clock()
        self.seen: list[tuple[str, str]] = []
        self.breaker = CircuitBreaker(
            BreakerPolicy(threshold, window, reset),
            lambda old, new: self.seen.append((old.value, new.value)),
            self.clock,
        )
        self.model = Model(threshold, window, reset)
        self.next_id = 0

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.5]))
    def time_passes(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(target=calls)
    def ask(self) -> object:
        call = self._new_id()
        permit = self.breaker.permit()
        granted, probe, retry_in = self.model.permit(call, self.clock.now)
        assert (permit.granted, permit.probe) == (granted, probe)
        assert permit.retry_in == pytest.approx(retry_in)
        return Call(call, permit) if granted else multiple()  # a refused call is never made

    @precondition(lambda self: self.breaker.closed)
    @rule(target=calls)
    def fast_path_call(self) -> Call:
        # The guard's fast path: it reads `closed` and asks for no permit.
        return Call(self._new_id(), None)

    @rule(call=consumes(calls))
    def succeeds(self, call: Call) -> None:
        if call.permit is not None:  # the fast path reports no success
            self.breaker.record_success(call.permit)
        self.model.success(call.id)

    @rule(call=consumes(calls), incident=st.sampled_from([None, None, ("worker", 1), ("worker", 2)]))
    def fails(self, call: Call, incident: object) -> None:
        self.breaker.record_failure(call.permit, incident)
        self.model.failure(call.id, self.clock.now, incident)

    @rule(call=consumes(calls))
    def interrupted(self, call: Call) -> None:
        if call.permit is not None:
            self.breaker.release(call.permit)
        self.model.release(call.id)

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "model"):
            return
        assert self.breaker.state.value == self.model.state
        assert self.breaker.closed == (self.model.state == "closed")
        assert self.seen == self.model.transitions
        expected = max(0.0, self.model.opened_at + self.model.reset - self.clock.now)
        assert self.breaker.retry_in() == pytest.approx(expected if self.model.state == "open" else 0.0)


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestBreakerAgainstItsModel = BreakerMachine.TestCase
