"""What the stages need from around them, in one frozen value, and how a stage says no.

A stage never calls back into the object that runs it: whatever it needs from the host (or
from the worker process, which runs the same stages) is in the `Environment` it is given.
The host builds one when it starts and replaces it after each discovery (`with_survey`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .._breaker import CircuitBreaker
from .._cache import DiscoveryCache
from .._model import Isolation, Refusal, TrustMode
from .._ownership import HostModules, PluginsDirLayout
from .._trust import TrustStore

if TYPE_CHECKING:
    from .._guard import ErrorRecorder  # the guards load with the first activation

CODE_CACHE_DIR = "code-cache"
"""Under a state directory (the host's, or a worker's own): compiled verified modules, keyed by digest."""


class StandIn(Protocol):
    """What a worker starter returns: an object carrying the plugin's hookimpls, stopped on release."""

    def stop(self) -> None: ...


WorkerStarter = Callable[[str, bool], StandIn]
"""(plugin id, whether its worker keeps the network) -> the stand-in to register in place of the plugin.
Raises `WorkerError` (a `HandshakeError` naming the stage that refused it inside the worker)."""

BreakerFactory = Callable[[str], CircuitBreaker]
"""plugin id -> the circuit breaker its guards consult."""

RecorderFactory = Callable[[str], "ErrorRecorder"]
"""plugin id -> what its guards call with each exception the plugin raised."""


class Environment(msgspec.Struct, frozen=True):
    """The trust store, the API version, the audit sink, the worker starter, the breaker factory,
    and what the last discovery found around the plugins: everything a stage reads besides its input."""

    trust: TrustStore
    trust_mode: TrustMode
    api_version: str
    audit: Any  # a structlog-like logger: info, warning, error with keyword fields
    layout: PluginsDirLayout
    host_modules: HostModules
    new_breaker: BreakerFactory
    recorder: RecorderFactory
    development: bool = False
    default_isolation: Isolation = Isolation.INPROCESS
    # None: plugins run in this process only (the worker itself, which must not start a worker of a worker).
    start_worker: WorkerStarter | None = None
    code_cache: Path | None = None
    guard_calls: bool = True
    propagating: frozenset[str] = frozenset()
    roots: tuple[Path, ...] = ()  # inspect finds editable installs' manifests in these
    cache: DiscoveryCache | None = None

    def with_survey(self, roots: tuple[Path, ...], layout: PluginsDirLayout, host_modules: HostModules) -> Environment:
        """Return this environment with what a new discovery found."""
        return msgspec.structs.replace(self, roots=roots, layout=layout, host_modules=host_modules)


class Refused(Exception):
    """A stage refused the plugin; carries the refusal to the one place that records it."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal
