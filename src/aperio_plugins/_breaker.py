"""A circuit breaker per plugin: after repeated failures, calls fail fast until a probe succeeds.

closed ──(threshold failures within window)──► open ──(reset timeout)──► half-open
  ▲                                              ▲                          │
  │                                              └──(the probe fails)───────┤
  └──────────────────────(the one probe call succeeds)─────────────────────┘

Every call the breaker lets through while it is not closed holds a `Permit`;
only the probe's permit can close or re-open it. What a call that started
before the breaker opened says afterwards changes nothing: its success does not
close an open breaker, its failure does not push the next probe further away.
Failures that share an incident (every call in flight when one worker died)
count once.

`closed` is a plain attribute so that the guard around every hook call pays
one attribute read on the fast path; everything else happens only once
something has failed.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

import msgspec

from .errors import ConfigurationError, WorkerCrashedError


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerPolicy(msgspec.Struct, frozen=True):
    """When a plugin's breaker opens and for how long. Defaults suit a plugin called a few times a minute."""

    failure_threshold: int = 5
    window_seconds: float = 60.0
    reset_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.window_seconds <= 0 or self.reset_timeout_seconds <= 0:
            raise ConfigurationError("breaker thresholds and durations must be positive")


class Permit:
    """The breaker's answer to one call: whether it may go through, and if not, when to retry.

    `probe` is set on the one call a half-open breaker lets through; `retry_in`
    (seconds) is computed when the call was refused, under the breaker's lock.
    """

    __slots__ = ("granted", "probe", "retry_in")

    def __init__(self, *, granted: bool, probe: bool = False, retry_in: float = 0.0) -> None:
        self.granted = granted
        self.probe = probe
        self.retry_in = retry_in

    def __repr__(self) -> str:
        what = "probe" if self.probe else "granted" if self.granted else f"refused, retry in {self.retry_in:.3f} s"
        return f"<permit {what}>"


_THROUGH = Permit(granted=True)  # shared by every call made while the breaker is closed


def incident_of(error: BaseException) -> Hashable | None:
    """Return what `error` has in common with other failures that count once, or None.

    Every call in flight when a worker dies fails with a `WorkerCrashedError`
    naming that worker's generation: one crash, one failure.
    """
    if isinstance(error, WorkerCrashedError) and error.generation is not None:
        return ("worker", error.generation)
    return None


Transition = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """One plugin's breaker. Thread-safe; `on_transition(old, new)` is called outside the lock.

    A caller asks `permit()` before a call (unless `closed` says it may skip
    that), then reports the outcome with `record_success(permit)`,
    `record_failure(permit, incident)` or, for a call that ended without an
    outcome (interrupted), `release(permit)`. A failure reported without a
    permit is one from a call made while the breaker was closed.
    """

    def __init__(
        self,
        policy: BreakerPolicy,
        on_transition: Transition | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.closed = True
        self._state = BreakerState.CLOSED
        self._failures: deque[float] = deque()
        self._incidents: dict[Hashable, float] = {}  # incident -> when its first failure was counted
        self._opened_at = 0.0
        self._probe: Permit | None = None  # the half-open breaker's probe, while it is in flight
        self._lock = threading.Lock()
        self._on_transition = on_transition
        self._clock = clock
        self._watchers: list[Callable[[bool], None]] = []

    def watch_closed(self, watcher: Callable[[bool], None]) -> None:
        """Call `watcher(closed)` now and whenever `closed` changes, under the breaker's lock, before
        any other thread can see the new state (guards switch their code with it: see `_guard`)."""
        with self._lock:
            self._watchers.append(watcher)
            watcher(self.closed)

    @property
    def state(self) -> BreakerState:
        return self._state

    def _move(self, new: BreakerState) -> tuple[BreakerState, BreakerState] | None:
        old = self._state
        if old is new:
            return None
        self._state = new
        closed = new is BreakerState.CLOSED
        if closed != self.closed:
            for watcher in self._watchers:
                watcher(closed)
        self.closed = closed
        return old, new

    def _notify(self, change: tuple[BreakerState, BreakerState] | None) -> None:
        if change is not None and self._on_transition is not None:
            self._on_transition(*change)

    def permit(self) -> Permit:
        """Return whether a call may go through now. While half-open, exactly one probe at a time does."""
        change = None
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return _THROUGH
            if self._state is BreakerState.OPEN:
                wait = self._opened_at + self.policy.reset_timeout_seconds - self._clock()
                if wait > 0:
                    return Permit(granted=False, retry_in=wait)
                change = self._move(BreakerState.HALF_OPEN)
            if self._probe is not None:
                # The probe's outcome decides; until it comes, nobody can say when calls go through again.
                return Permit(granted=False)
            self._probe = Permit(granted=True, probe=True)
            probe = self._probe
        self._notify(change)
        return probe

    def record_success(self, permit: Permit | None = None) -> None:
        """A call succeeded: if it was the half-open breaker's probe, the breaker closes."""
        if permit is None or not permit.probe:
            return  # a call let through while closed: successes do not undo failures within the window
        with self._lock:
            if permit is not self._probe:
                return  # an old probe, superseded
            self._probe = None
            self._failures.clear()
            change = self._move(BreakerState.CLOSED)
        self._notify(change)

    def record_failure(self, permit: Permit | None = None, incident: Hashable | None = None) -> None:
        """A call failed: the probe's failure re-opens the breaker for a full reset timeout; while
        closed, the failure counts (once per `incident`), and enough of them within the window open it."""
        now = self._clock()
        with self._lock:
            if permit is not None and permit is self._probe:
                self._probe = None
                self._opened_at = now
                change = self._move(BreakerState.OPEN)
            elif self._state is BreakerState.CLOSED:
                change = self._count(now, incident)
            else:
                return  # it started before the breaker opened: what it says is old news
        self._notify(change)

    def release(self, permit: Permit) -> None:
        """A call ended without a verdict (interrupted): a probe's place goes to the next caller."""
        with self._lock:
            if permit is self._probe:
                self._probe = None

    def _count(self, now: float, incident: Hashable | None) -> tuple[BreakerState, BreakerState] | None:
        horizon = now - self.policy.window_seconds
        while self._failures and self._failures[0] < horizon:
            self._failures.popleft()
        for seen in [key for key, when in self._incidents.items() if when < horizon]:
            del self._incidents[seen]
        if incident is not None:
            if incident in self._incidents:
                return None
            self._incidents[incident] = now
        self._failures.append(now)
        if len(self._failures) < self.policy.failure_threshold:
            return None
        self._failures.clear()
        self._opened_at = now
        return self._move(BreakerState.OPEN)

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now, or is not open)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.policy.reset_timeout_seconds - self._clock())
