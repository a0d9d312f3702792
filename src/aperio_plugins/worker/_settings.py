"""`WorkerSettings`: every limit and timeout of a worker, with the defaults an operator would pick."""

from __future__ import annotations

import math
import random

import msgspec

from ..errors import ConfigurationError

_MIB = 1024 * 1024


class WorkerSettings(msgspec.Struct, frozen=True):
    """Limits, timeouts and restart policy for the workers of one host. All times are in seconds.

    Raises `ConfigurationError` naming the field for a value out of range.
    """

    call_timeout: float = 30.0
    """Deadline of a hook call through the relay; `run()` uses the invocation context's own deadline."""
    start_timeout: float = 20.0
    """From spawn until the worker has loaded (and re-verified) its plugin and described it."""
    grace_period: float = 5.0
    """How long a worker has to answer a cancel or a heartbeat before it is killed."""
    heartbeat_interval: float = 10.0
    """How often an idle worker is pinged."""
    stop_timeout: float = 10.0
    """How long `stop()` lets in-flight calls finish before it terminates the worker."""
    kill_timeout: float = 3.0
    """How long a terminated (SIGTERM) worker has to exit before SIGKILL."""
    restart_initial_delay: float = 0.5
    restart_max_delay: float = 60.0
    restart_multiplier: float = 2.0
    restart_max_attempts: int = 10
    """Consecutive failed starts or crashes after which the host gives up on the worker."""
    restart_reset_after: float = 60.0
    """Uptime after which a worker's earlier crashes are forgiven (an answered call forgives them too)."""
    memory_limit: int | None = 2048 * _MIB
    """RLIMIT_AS of the worker in bytes; None for no limit."""
    cpu_time_limit: int | None = None
    """RLIMIT_CPU of the worker in seconds of CPU over its whole life; None (the default) for no limit,
    because a long-lived worker accumulates CPU time however well it behaves."""
    max_frame_bytes: int = 64 * _MIB
    """The largest protocol frame either side accepts."""
    stderr_line_limit: int = 4096
    """Bytes of one stderr line kept in a `plugin.worker.stderr` event; the rest is cut."""
    stderr_bytes_per_second: int = 64 * 1024
    stderr_burst_bytes: int = 256 * 1024
    """Stderr beyond this rate (after a burst allowance) is dropped and counted, not logged."""
    env_allowlist: tuple[str, ...] = ()
    """Names of host environment variables the operator lets through to workers."""

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "env_allowlist":
                if isinstance(value, str) or not all(isinstance(name, str) and name for name in value):
                    raise ConfigurationError("WorkerSettings.env_allowlist: expected a tuple of variable names")
                continue
            if value is None and name in ("memory_limit", "cpu_time_limit"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigurationError(f"WorkerSettings.{name}={value!r}: expected a finite number")
            if value <= 0:
                raise ConfigurationError(f"WorkerSettings.{name}={value!r}: must be greater than 0")
        if self.restart_multiplier < 1:
            raise ConfigurationError(f"WorkerSettings.restart_multiplier={self.restart_multiplier!r}: must be >= 1")
        if self.restart_max_delay < self.restart_initial_delay:
            raise ConfigurationError("WorkerSettings.restart_max_delay must not be below restart_initial_delay")

    def backoff_cap(self, attempt: int) -> float:
        """Return the upper bound of the delay before restart `attempt` (1 for the first)."""
        exponent = min(attempt - 1, 64)  # beyond this the cap is max_delay anyway; avoids overflow
        return float(min(self.restart_max_delay, self.restart_initial_delay * self.restart_multiplier**exponent))

    def backoff_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the delay before restart `attempt`: full jitter, uniform in [0, cap].

        Full jitter spreads the restarts of many workers that died together (a
        host-wide outage) instead of letting them restart in lockstep.
        """
        # Jitter spreads restarts; it protects nothing secret, so a non-cryptographic generator is right.
        return (rng or random).uniform(0.0, self.backoff_cap(attempt))
