"""What a `PluginHost` hands the pipeline: the `Environment`, whose callbacks reach the host's records
and never the host itself (a worker's death, a breaker's move, a guard's failed call each change one
field of one record)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from aperio_hookspecs import PROJECT_NAME, PROPAGATE_ATTRIBUTE
from aperio_hookspecs import specs as api_specs

from ._breaker import BreakerState, CircuitBreaker
from ._cache import DiscoveryCache
from ._ownership import HostModules, PluginsDirLayout
from ._plugin_records import Records
from ._settings import HostSettings
from ._trust import TrustStore
from .errors import WorkerError
from .pipeline.environment import CODE_CACHE_DIR, Environment
from .worker import WorkerSettings

if TYPE_CHECKING:
    from ._guard import ErrorRecorder
    from .worker import WorkerPlugin

_BREAKER_EVENTS = {
    BreakerState.OPEN: "plugin.breaker.opened",
    BreakerState.HALF_OPEN: "plugin.breaker.half_open",
    BreakerState.CLOSED: "plugin.breaker.closed",
}


def host_environment(
    settings: HostSettings,
    records: Records,
    *,
    trust: TrustStore,
    api_version: str,
    audit: Any,
    plugin_logger: Any,
    search_path: Sequence[str],
    worker_settings: WorkerSettings,
    guard_calls: bool,
    propagating: frozenset[str],
    cache: DiscoveryCache | None,
    plugins_root: Path,
) -> Environment:
    """Return the environment the host's stages run in, before any discovery."""

    def start_worker(plugin_id: str, network: bool) -> WorkerPlugin:
        # The worker's host side (about 20 ms to import, msgpack and msgspec with it) loads with the first
        # isolated plugin: a host whose plugins all run in process, and `aperio plugin list`, never need it.
        from .worker import WorkerPlugin

        def failed(_: str, error: WorkerError) -> None:
            # The supervisor has audited the worker's death; the calls it broke are counted (and fed
            # to the breaker, once per worker generation) by the callers' guards or by run(), so
            # here it is only shown.
            records.update(plugin_id, last_call_error=f"worker: {error.message}")

        return WorkerPlugin.start(
            plugin_id,
            settings=settings,
            search_path=search_path,
            options=worker_settings,
            audit_logger=audit,
            logger=plugin_logger,
            on_failure=failed,
            network=network,
        )

    def new_breaker(plugin_id: str) -> CircuitBreaker:
        def moved(old: BreakerState, new: BreakerState) -> None:
            records.update(plugin_id, breaker_state=new.value)
            log = audit.error if new is BreakerState.OPEN else audit.info
            log(_BREAKER_EVENTS[new], plugin_id=plugin_id, previous=old.value)

        return CircuitBreaker(settings.breaker_policy, moved)

    def recorder(plugin_id: str) -> ErrorRecorder:
        # The guard tells the breaker itself, with the call's permit.
        def record(hook_name: str, exc: BaseException) -> None:
            records.call_failed(plugin_id, hook_name, exc)

        return record

    return Environment(
        trust=trust,
        trust_mode=settings.plugin_trust_mode,
        api_version=api_version,
        audit=audit,
        layout=PluginsDirLayout(plugins_root),
        host_modules=HostModules(plugins_root),
        new_breaker=new_breaker,
        recorder=recorder,
        development=settings.is_development,
        default_isolation=settings.plugin_isolation,
        start_worker=start_worker,
        code_cache=settings.state_dir / CODE_CACHE_DIR,
        guard_calls=guard_calls,
        propagating=propagating,
        cache=cache,
    )


def plugin_manager(hookspecs: Sequence[ModuleType | type]) -> tuple[pluggy.PluginManager, frozenset[str]]:
    """A plugin manager with the plugin API's hookspecs and `hookspecs`, and the names of the hooks
    whose errors propagate to the caller (marked with `aperio_hookspecs.propagate_errors`)."""
    manager = pluggy.PluginManager(PROJECT_NAME)
    sources: tuple[ModuleType | type, ...] = (api_specs, *hookspecs)
    for source in sources:
        manager.add_hookspecs(source)
    return manager, frozenset(_propagating_hooks(sources))


def _propagating_hooks(sources: Iterable[object]) -> Iterable[str]:
    for source in sources:
        for name in dir(source):
            if getattr(getattr(source, name, None), PROPAGATE_ATTRIBUTE, False):
                yield name
