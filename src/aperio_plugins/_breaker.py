"""A circuit breaker per plugin: after repeated failures, calls fail fast until a probe succeeds.

closed ──(threshold failures within window)──► open ──(reset timeout)──► half-open
  ▲                                                                        │
  └────────────────(the one probe call succeeds)───────────────────────────┘
                        (the probe fails: open again)

`closed` is a plain attribute so that the guard around every hook call pays
one attribute read on the fast path; everything else happens only once
something has failed.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigurationError


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """When a plugin's breaker opens and for how long. Defaults suit a plugin called a few times a minute."""

    failure_threshold: int = 5
    window_seconds: float = 60.0
    reset_timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.window_seconds <= 0 or self.reset_timeout_seconds <= 0:
            raise ConfigurationError("breaker thresholds and durations must be positive")


Transition = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """One plugin's breaker. Thread-safe; `on_transition(old, new)` is called outside the lock."""

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
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._lock = threading.Lock()
        self._on_transition = on_transition
        self._clock = clock

    @property
    def state(self) -> BreakerState:
        return self._state

    def _move(self, new: BreakerState) -> tuple[BreakerState, BreakerState] | None:
        old = self._state
        if old is new:
            return None
        self._state = new
        self.closed = new is BreakerState.CLOSED
        return old, new

    def _notify(self, change: tuple[BreakerState, BreakerState] | None) -> None:
        if change is not None and self._on_transition is not None:
            self._on_transition(*change)

    def allow(self) -> bool:
        """Return whether a call may go through now; while half-open, only one probe at a time."""
        change = None
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.OPEN:
                if self._clock() - self._opened_at < self.policy.reset_timeout_seconds:
                    return False
                change = self._move(BreakerState.HALF_OPEN)
            allowed = not self._probe_in_flight
            self._probe_in_flight = True
        self._notify(change)
        return allowed

    def record_success(self) -> None:
        with self._lock:
            self._probe_in_flight = False
            self._failures.clear()
            change = self._move(BreakerState.CLOSED)
        self._notify(change)

    def record_failure(self) -> None:
        now = self._clock()
        with self._lock:
            self._probe_in_flight = False
            if self._state is BreakerState.HALF_OPEN:
                self._opened_at = now
                change = self._move(BreakerState.OPEN)
            else:
                self._failures.append(now)
                while self._failures and now - self._failures[0] > self.policy.window_seconds:
                    self._failures.popleft()
                change = None
                if len(self._failures) >= self.policy.failure_threshold:
                    self._opened_at = now
                    self._failures.clear()
                    change = self._move(BreakerState.OPEN)
        self._notify(change)

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self.policy.reset_timeout_seconds - (self._clock() - self._opened_at))
