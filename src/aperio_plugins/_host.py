"""`PluginHost`: the one stateful object. It keeps the plugins' records and their lifecycle, calls
the pipeline's stages in order (`pipeline/`), and changes state only after everything that can
fail has run."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import threading
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import pluggy
from pydantic import BaseModel

import aperio_hookspecs
from aperio_hookspecs import PROJECT_NAME, PROPAGATE_ATTRIBUTE, Payload
from aperio_hookspecs import specs as api_specs

from . import _invoke
from ._audit import default_audit_logger, default_plugin_logger
from ._boundary import Boundary
from ._breaker import BreakerState, CircuitBreaker, incident_of
from ._cache import CACHE_FILE_NAME, DiscoveryCache
from ._catalog import Catalog, CatalogEntry, PluginRegistrations
from ._context import CredentialProvider, new_context
from ._guard import ErrorRecorder
from ._model import (
    Candidate,
    Inspected,
    Isolation,
    LoadReport,
    PluginInfo,
    PluginKind,
    PluginState,
    TrustMode,
    Verification,
)
from ._ownership import HostModules, OwnedDistribution, PluginsDirLayout
from ._settings import HostSettings
from ._state import SQLiteStateStore, StateStore
from ._trust import Severity, TrustProblem, TrustStore, load_trust_store, plugins_dir_problems
from ._verify import verify_installed
from .errors import (
    AperioWarning,
    ConfigurationError,
    LifecycleError,
    PluginCallError,
    PluginLoadError,
    UnknownPluginError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
)
from .pipeline import walk
from .pipeline.admit import Decision, duplicate_refusal, split_duplicates
from .pipeline.discover import Discovery, survey
from .pipeline.environment import Environment, Refused
from .pipeline.inspect import inspect_candidate
from .pipeline.load import forget_modules, restore_on_failure
from .pipeline.register import Activated, circuit_open
from .worker import WorkerPlugin, WorkerSettings

_BREAKER_EVENTS = {
    BreakerState.OPEN: "plugin.breaker.opened",
    BreakerState.HALF_OPEN: "plugin.breaker.half_open",
    BreakerState.CLOSED: "plugin.breaker.closed",
}
_MAX_TRACEBACK_CHARS = 4000
CODE_CACHE_DIR = "code-cache"


@dataclass
class _Slot:
    """The host's record of one plugin id. Replaced field by field, only after a step succeeded."""

    info: PluginInfo
    candidate: Candidate | None = None
    activated: Activated | None = None

    @property
    def registrations(self) -> PluginRegistrations:
        return self.activated.registrations if self.activated is not None else PluginRegistrations()


class PluginHost:
    """Discovers, checks, loads and runs plugins; the operator's lifecycle actions act on it.

    >>> with PluginHost() as host:
    ...     report = host.load()
    ...     host.hook.aperio_finding_raised(finding=finding)
    """

    def __init__(
        self,
        settings: HostSettings | None = None,
        *,
        search_path: Iterable[str | Path] | None = None,
        state_store: StateStore | None = None,
        audit_logger: Any = None,
        plugin_logger: Any = None,
        guard_calls: bool = True,
        hookspecs: Sequence[ModuleType | type] = (),
        credential_provider: CredentialProvider | None = None,
        api_version: str | None = None,
        call_timeout: float = 30.0,
        discovery_cache: bool = True,
        worker_settings: WorkerSettings | None = None,
    ) -> None:
        """Create a host; nothing is discovered or imported until `load()`.

        Raises `ConfigurationError` for invalid settings and `StateStoreError`
        when the state store cannot be opened: without it the host cannot know
        which plugins the operator disabled, so it refuses to guess. With
        `discovery_cache`, what discovery read is remembered in the state
        directory, keyed by each file's stat signature.
        """
        self.settings = settings if settings is not None else HostSettings.from_environment()
        self.api_version = api_version or aperio_hookspecs.API_VERSION
        self._search_path = [str(entry) for entry in (sys.path if search_path is None else search_path)]
        self._audit = audit_logger if audit_logger is not None else default_audit_logger()
        self._plugin_logger = plugin_logger if plugin_logger is not None else default_plugin_logger()
        self._credential_provider = credential_provider
        self._call_timeout = call_timeout
        self._worker_settings = worker_settings or WorkerSettings(call_timeout=call_timeout)
        self._manager = pluggy.PluginManager(PROJECT_NAME)
        spec_sources: tuple[ModuleType | type, ...] = (api_specs, *hookspecs)
        for source in spec_sources:
            self._manager.add_hookspecs(source)
        self._store = state_store if state_store is not None else SQLiteStateStore.in_directory(self.settings.state_dir)
        self._slots: dict[str, _Slot] = {}
        self._shadowed: list[PluginInfo] = []
        self._broken: list[str] = []
        self._catalog = Catalog()
        self._lock = threading.RLock()
        self._closed = False
        self._plugins_root = _resolved(self.settings.plugins_dir)
        self._boundary = Boundary(self._plugins_root, self.trust_mode, self._report_dependency)
        self._reported: set[str] = set()  # problems and dependencies already audited by this host
        cache = DiscoveryCache(self.settings.state_dir / CACHE_FILE_NAME) if discovery_cache else None
        self._env = Environment(
            trust=load_trust_store(self.settings),
            trust_mode=self.trust_mode,
            api_version=self.api_version,
            audit=self._audit,
            layout=PluginsDirLayout(self._plugins_root),
            host_modules=HostModules(self._plugins_root),
            new_breaker=self._new_breaker,
            recorder=self._recorder,
            development=self.settings.is_development,
            default_isolation=self.settings.plugin_isolation,
            start_worker=self._start_worker,
            code_cache=self.settings.state_dir / CODE_CACHE_DIR,
            guard_calls=guard_calls,
            propagating=frozenset(_propagating_hooks(spec_sources)),
            cache=cache,
        )
        self._report_trust_problems()

    # -- relay and catalog ---------------------------------------------------

    @property
    def hook(self) -> pluggy.HookRelay:
        """pluggy's relay: `host.hook.<name>(**kwargs)`, reaching every enabled plugin."""
        return self._manager.hook

    @property
    def trust_mode(self) -> TrustMode:
        return self.settings.plugin_trust_mode

    @property
    def connectors(self) -> Mapping[str, CatalogEntry]:
        return self._catalog.of_kind(PluginKind.CONNECTOR)

    @property
    def remediations(self) -> Mapping[str, CatalogEntry]:
        return self._catalog.of_kind(PluginKind.REMEDIATION)

    @property
    def destinations(self) -> Mapping[str, CatalogEntry]:
        return self._catalog.of_kind(PluginKind.DESTINATION)

    def plugins(self) -> tuple[PluginInfo, ...]:
        """Return a snapshot of every plugin the host knows, by id, duplicates after their winner."""
        with self._lock:
            rows = [_snapshot(slot) for slot in self._slots.values()] + list(self._shadowed)
        return tuple(sorted(rows, key=lambda info: (info.id, info.state is PluginState.FAILED, info.location or "")))

    def get(self, plugin_id: str) -> PluginInfo:
        """Return the snapshot for `plugin_id`; raise `UnknownPluginError` if the host has none."""
        return _snapshot(self._slot(plugin_id))

    @property
    def broken_distributions(self) -> tuple[str, ...]:
        """Distributions whose metadata could not be read during the last discovery."""
        return tuple(self._broken)

    @property
    def plugins_dir_problems(self) -> tuple[TrustProblem, ...]:
        """What the last discovery found in the plugins directory that no admitted code accounts for."""
        return tuple(plugins_dir_problems(self._env.layout, self.trust_mode))

    @property
    def trust_store(self) -> TrustStore:
        """The trust configuration this host checks plugins against, with the problems found in it."""
        return self._env.trust

    # -- the pipeline --------------------------------------------------------

    def load(self, only: Iterable[str] | None = None) -> LoadReport:
        """Discover every installed plugin and bring up those not already loaded (or just the ids in `only`).

        Never raises for a plugin's fault: each refusal is recorded in the
        plugin's `PluginInfo` (state `failed`, `error`, `failure_stage`).
        """
        wanted = None if only is None else frozenset(only)
        with self._lock:
            self._ensure_open()
            discovery = self._discover()
            # Operator decisions are read once per load, not once per plugin.
            flags = self._store.enabled_flags()
            isolations = self._store.isolation_overrides()
            winners, duplicates = split_duplicates(discovery.candidates)
            for candidate in winners:
                plugin_id = candidate.plugin_id
                current = self._slots.get(plugin_id)
                if (wanted is not None and plugin_id not in wanted) or (
                    current is not None and current.info.state in (PluginState.ENABLED, PluginState.DISABLED)
                ):
                    continue
                self._bring_up(candidate, flags.get(plugin_id, True), isolations.get(plugin_id))
            self._shadowed = []
            for duplicate, winner in duplicates:
                if wanted is None or duplicate.plugin_id in wanted:
                    refusal = duplicate_refusal(duplicate, winner)
                    self._audit.warning(
                        refusal.event,
                        plugin_id=duplicate.plugin_id,
                        distribution=duplicate.describe(),
                        winner=winner.describe(),
                    )
                    self._shadowed.append(walk.failed_info(duplicate, refusal, self._env))
            if self._env.cache is not None:
                self._env.cache.save()
            return LoadReport(self.plugins())

    def _discover(self) -> Discovery:
        """Run the discover stage, serve the plugins directory's unsigned dependencies if the trust mode
        allows it, and audit what this host has not reported yet."""
        found = survey(self._search_path, self.settings.plugins_dir, self._plugins_root, self._env.cache)
        self._env = self._env.with_survey(found.roots, found.layout, found.host_modules)
        self._boundary.update(found.layout, found.host_modules)
        for problem in plugins_dir_problems(found.layout, self.trust_mode):
            self._audit_problem(problem)
        discovery = found.discovery
        self._broken = [f"{item.name} in {item.root}: {item.reason}" for item in discovery.broken]
        for item in discovery.broken:
            self._audit.warning(
                "plugin.discovery.failed", distribution=item.name, root=str(item.root), reason=item.reason
            )
        # Once per discovery, not per plugin: each call makes every finder on sys.path list its directory again.
        importlib.invalidate_caches()
        return discovery

    def _bring_up(self, candidate: Candidate, enabled_flag: bool, isolation_override: Isolation | None) -> PluginInfo:
        walked = walk.bring_up(candidate, self._env, enabled_flag, isolation_override, self._manager, self._catalog)
        self._slots[candidate.plugin_id] = _Slot(walked.info, candidate, walked.activated)
        if walked.activated is not None:
            self._catalog.add(candidate.plugin_id, walked.activated.registrations)
            info = walked.info
            self._audit.info("plugin.loaded", plugin_id=info.id, distribution=info.distribution, version=info.version)
            self._audit.info("plugin.enabled", plugin_id=info.id)
        return walked.info

    # What the stages get from the host: each is called by a stage or a guard, and touches one slot.

    def _start_worker(self, plugin_id: str, network: bool) -> WorkerPlugin:
        def failed(_: str, error: WorkerError) -> None:
            # The supervisor has audited the worker's death; the calls it broke are counted (and fed
            # to the breaker, once per worker generation) by the callers' guards or by run(), so
            # here it is only shown.
            self._update_info(plugin_id, last_call_error=f"worker: {error.message}")

        return WorkerPlugin.start(
            plugin_id,
            settings=self.settings,
            search_path=self._search_path,
            options=self._worker_settings,
            audit_logger=self._audit,
            logger=self._plugin_logger,
            on_failure=failed,
            network=network,
        )

    def _new_breaker(self, plugin_id: str) -> CircuitBreaker:
        def moved(old: BreakerState, new: BreakerState) -> None:
            self._update_info(plugin_id, breaker_state=new.value)
            log = self._audit.error if new is BreakerState.OPEN else self._audit.info
            log(_BREAKER_EVENTS[new], plugin_id=plugin_id, previous=old.value)

        return CircuitBreaker(self.settings.breaker_policy, moved)

    def _recorder(self, plugin_id: str) -> ErrorRecorder:
        # The guard tells the breaker itself, with the call's permit.
        def record(hook_name: str, exc: BaseException) -> None:
            self._record_call_failure(plugin_id, hook_name, exc)

        return record

    def _report_dependency(self, distribution: OwnedDistribution, refused: str | None) -> None:
        key = f"dependency {distribution.metadata_dir} {refused}"
        if key in self._reported:
            return
        self._reported.add(key)
        self._audit.warning(
            "plugin.dependency.unsigned",
            distribution=distribution.describe(),
            location=str(distribution.metadata_dir),
            importable=refused is None,
            reason=refused or f"not a plugin, unsigned; importable because trust mode is {self.trust_mode.value}",
        )

    # -- operator lifecycle --------------------------------------------------

    def _require_installed(self, plugin_id: str) -> None:
        installed = {candidate.plugin_id for candidate in self._discover().candidates}
        if plugin_id not in installed and plugin_id not in self._slots:
            known = ", ".join(sorted(installed)) or "none"
            raise UnknownPluginError(
                f"no installed plugin with id {plugin_id!r} (installed: {known})", plugin_id=plugin_id
            )

    def persist_isolation(self, plugin_id: str, isolation: Isolation | None) -> None:
        """Record where an installed plugin runs (`process` or `inprocess`; None: the host default).

        Imports nothing; it takes effect the next time the plugin is loaded (reload
        or the next start). Raises `UnknownPluginError` for an id nobody provides.
        """
        if isolation is Isolation.ANY:
            raise ConfigurationError("isolation must be 'process' or 'inprocess'")
        with self._lock:
            self._require_installed(plugin_id)
            self._store.set_isolation(plugin_id, isolation)
            self._audit.info(
                "plugin.isolation.set", plugin_id=plugin_id, isolation=isolation.value if isolation else "default"
            )

    def persist_enabled(self, plugin_id: str, enabled: bool) -> None:
        """Record the operator's enable flag for an installed plugin without importing anything.

        It takes effect at the next `load()`. Raises `UnknownPluginError` when no
        distribution on the search path provides `plugin_id`.
        """
        with self._lock:
            self._require_installed(plugin_id)
            self._store.set_enabled(plugin_id, enabled)
            self._audit.info("plugin.enabled" if enabled else "plugin.disabled", plugin_id=plugin_id, persisted=True)

    def enable(self, plugin_id: str) -> PluginInfo:
        """Enable a plugin and persist the decision; import it first if it was never loaded.

        Raises `UnknownPluginError`, or `LifecycleError` for a failed plugin
        (reload it once fixed) or a catalog name another plugin now holds.
        """
        with self._lock:
            slot = self._slot(plugin_id)
            state = slot.info.state
            if state is PluginState.ENABLED:
                self._store.set_enabled(plugin_id, True)
                return slot.info
            if state is PluginState.FAILED:
                raise LifecycleError(
                    f"plugin {plugin_id!r} failed ({slot.info.error}); fix it, then reload it", plugin_id=plugin_id
                )
            if slot.activated is None:
                self._store.set_enabled(plugin_id, True)
                candidate = self._current_candidate(plugin_id)
                info = self._bring_up(candidate, True, self._store.isolation_overrides().get(plugin_id))
                if info.state is not PluginState.ENABLED:
                    raise PluginLoadError(
                        f"plugin {plugin_id!r} could not be enabled: {info.error}", plugin_id=plugin_id
                    )
                return info
            conflict = self._catalog.conflict(plugin_id, slot.registrations)
            if conflict is not None:
                raise LifecycleError(f"plugin {plugin_id!r} cannot be enabled: {conflict}", plugin_id=plugin_id)
            self._store.set_enabled(plugin_id, True)
            self._manager.register(slot.activated.prepared.registered, name=plugin_id)
            self._catalog.add(plugin_id, slot.registrations)
            slot.info = dataclasses.replace(slot.info, state=PluginState.ENABLED, enabled_flag=True)
            self._audit.info("plugin.enabled", plugin_id=plugin_id)
            return slot.info

    def disable(self, plugin_id: str) -> PluginInfo:
        """Disable a plugin and persist the decision. It stays in memory but receives no calls,
        and is not imported at the next start. Raises `UnknownPluginError`."""
        with self._lock:
            slot = self._slot(plugin_id)
            self._store.set_enabled(plugin_id, False)
            if slot.info.state is PluginState.ENABLED:
                self._manager.unregister(name=plugin_id)
                self._catalog.remove(plugin_id)
            if slot.info.state is not PluginState.DISABLED:
                self._audit.info("plugin.disabled", plugin_id=plugin_id, previous=slot.info.state.value)
            slot.info = dataclasses.replace(slot.info, state=PluginState.DISABLED, enabled_flag=False)
            return slot.info

    def unload(self, plugin_id: str) -> PluginInfo:
        """Remove a plugin from memory; its files stay and the next `load()` brings it back.

        Raises `LifecycleError` if the plugin is not loaded.
        """
        with self._lock:
            slot = self._slot(plugin_id)
            if slot.info.state not in (PluginState.ENABLED, PluginState.DISABLED):
                raise LifecycleError(
                    f"plugin {plugin_id!r} is {slot.info.state.value}, not loaded", plugin_id=plugin_id
                )
            if slot.info.state is PluginState.ENABLED:
                self._manager.unregister(name=plugin_id)
                self._catalog.remove(plugin_id)
            if slot.candidate is not None:
                forget_modules(slot.candidate)
            if slot.activated is not None:
                slot.activated.loaded.release()
            slot.activated = None
            unloaded = dataclasses.replace(slot.info, state=PluginState.UNLOADED)
            slot.info = walk.with_registrations(unloaded, PluginRegistrations())
            self._audit.info("plugin.unloaded", plugin_id=plugin_id)
            return slot.info

    def reload(self, plugin_id: str) -> PluginInfo:
        """Re-read, re-verify and re-import a plugin from disk in place, keeping enabled or disabled.

        Raises `PluginLoadError` if the new files cannot be brought up; a plugin
        that was loaded then keeps running the version it had.
        """
        with self._lock:
            slot = self._slot(plugin_id)
            candidate = self._current_candidate(plugin_id)
            enabled_flag = self._store.enabled_flags().get(plugin_id, True)
            isolation_override = self._store.isolation_overrides().get(plugin_id)
            if slot.activated is None:
                info = self._bring_up(candidate, enabled_flag, isolation_override)
                if info.state is PluginState.FAILED:
                    self._audit.warning("plugin.reload.failed", plugin_id=plugin_id, reason=info.error)
                    raise PluginLoadError(f"reload of {plugin_id!r} failed: {info.error}", plugin_id=plugin_id)
                self._audit.info("plugin.reload.completed", plugin_id=plugin_id, state=info.state.value)
                return info
            return self._reload_in_memory(slot, candidate, enabled_flag, isolation_override)

    def _reload_in_memory(
        self, slot: _Slot, candidate: Candidate, enabled_flag: bool, isolation_override: Isolation | None
    ) -> PluginInfo:
        plugin_id = candidate.plugin_id
        old = slot.activated
        assert old is not None
        was_enabled = slot.info.state is PluginState.ENABLED
        evaluated = walk.evaluate(candidate, self._env, enabled_flag)
        if evaluated.inspected is None or evaluated.decision is Decision.REFUSE:
            return self._reload_failed(plugin_id, evaluated.info.error or "refused")
        if was_enabled:
            self._manager.unregister(name=plugin_id)
        try:
            with restore_on_failure(candidate):
                activated = walk.activate(evaluated, self._env, isolation_override, self._manager, self._catalog)
        except Refused as refused:
            if was_enabled:
                self._manager.register(old.prepared.registered, name=plugin_id)
            return self._reload_failed(plugin_id, refused.refusal.reason)
        old.loaded.release()
        if was_enabled:
            self._catalog.add(plugin_id, activated.registrations)
        else:
            # A disabled plugin is re-imported and its registrations checked,
            # but it stays out of the manager until it is enabled.
            self._manager.unregister(name=plugin_id)
        state = PluginState.ENABLED if was_enabled else PluginState.DISABLED
        slot.candidate, slot.activated = candidate, activated
        fresh = dataclasses.replace(evaluated.info, state=state, call_failures=0, last_call_error=None)
        slot.info = walk.with_registrations(fresh, activated.registrations)
        self._audit.info("plugin.reload.completed", plugin_id=plugin_id, version=slot.info.version, state=state.value)
        return slot.info

    def _reload_failed(self, plugin_id: str, reason: str) -> PluginInfo:
        self._audit.warning("plugin.reload.failed", plugin_id=plugin_id, reason=reason)
        raise PluginLoadError(
            f"reload of {plugin_id!r} failed, the loaded version keeps running: {reason}", plugin_id=plugin_id
        )

    def verify(self, plugin_id: str) -> tuple[Inspected, Verification]:
        """Inspect and verify the installed plugin `plugin_id` from disk, importing nothing.

        Raises `UnknownPluginError` if it is not installed and `ManifestError`
        if it cannot be inspected.
        """
        with self._lock:
            try:
                candidate = self._current_candidate(plugin_id)
            except LifecycleError:
                raise UnknownPluginError(f"no installed plugin with id {plugin_id!r}", plugin_id=plugin_id) from None
            inspected = inspect_candidate(candidate, self._env.roots, self._env.cache)
            return inspected, verify_installed(inspected, self._env.trust)

    def _current_candidate(self, plugin_id: str) -> Candidate:
        winners, _ = split_duplicates(self._discover().candidates)
        for candidate in winners:
            if candidate.plugin_id == plugin_id:
                return candidate
        raise LifecycleError(f"plugin {plugin_id!r} is no longer installed on the search path", plugin_id=plugin_id)

    # -- calls ---------------------------------------------------------------

    def run(self, plugin_id: str, payload: Payload | Mapping[str, Any], *, timeout: float | None = None) -> BaseModel:
        """Invoke one plugin directly: a `SyncRequest` runs a connector, a `RemediationRequest` a
        remediation handler, a `DeliveryBatch` a destination. Returns the validated result envelope.

        Raises `HookError` for a payload that is malformed or names nothing the
        plugin provides, `LifecycleError` if the plugin is not enabled, and
        `PluginCallError` when the plugin raises or returns something malformed.
        Findings in a sync result are broadcast through `aperio_finding_raised`.
        """
        envelope = _invoke.parse_payload(plugin_id, payload)
        with self._lock:
            slot = self._slot(plugin_id)
            if slot.info.state is not PluginState.ENABLED:
                raise LifecycleError(
                    f"plugin {plugin_id!r} is {slot.info.state.value}: it receives no calls", plugin_id=plugin_id
                )
            info, registrations = slot.info, slot.registrations
            breaker = slot.activated.breaker if slot.activated is not None else None
        operation = _invoke.operation_for(envelope)
        entry = _invoke.catalog_entry(plugin_id, registrations, operation)
        context = new_context(
            plugin_id=plugin_id,
            scopes=info.credential_scopes,
            store=self._store,
            provider=self._credential_provider,
            base_logger=self._plugin_logger,
            timeout=self._call_timeout if timeout is None else timeout,
        )
        permit = None if breaker is None or breaker.closed else breaker.permit()
        if permit is not None and not permit.granted:
            raise circuit_open(plugin_id, operation.hook_name, permit)
        try:
            result = _invoke.invoke(entry, operation, envelope, context)
        except (PluginCallError, WorkerTimeoutError, WorkerCrashedError) as exc:
            self._record_call_failure(plugin_id, operation.hook_name, exc.__cause__ or exc)
            if breaker is not None:
                breaker.record_failure(permit, incident_of(exc))  # one worker crash is one failure
            raise
        except BaseException:
            if breaker is not None and permit is not None:
                breaker.release(permit)  # interrupted (KeyboardInterrupt, say): no verdict on the plugin
            raise
        if breaker is not None and permit is not None:
            breaker.record_success(permit)  # only the probe's success closes an open breaker
        if isinstance(result, aperio_hookspecs.SyncResult):
            for finding in result.findings:
                self.hook.aperio_finding_raised(finding=finding)
        return result

    def _record_call_failure(self, plugin_id: str, hook_name: str, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_TRACEBACK_CHARS:]
        with self._lock:
            slot = self._slots.get(plugin_id)
            if slot is not None:
                slot.info = dataclasses.replace(
                    slot.info,
                    call_failures=slot.info.call_failures + 1,
                    last_call_error=f"{hook_name}: {type(exc).__name__}: {exc}",
                )
        self._audit.error(
            "plugin.call.failed",
            plugin_id=plugin_id,
            hook=hook_name,
            error_type=type(exc).__name__,
            error=str(exc),
            traceback=text,
        )

    # -- shutdown ------------------------------------------------------------

    def close(self) -> None:
        """Tell every enabled plugin the host is shutting down, then release the state store. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.hook.aperio_host_shutdown()
            finally:
                # An unguarded host lets a plugin's shutdown error through,
                # but the manager and the store are released all the same.
                for slot in self._slots.values():
                    if slot.info.state is PluginState.ENABLED:
                        self._manager.unregister(name=slot.info.id)
                    if slot.activated is not None:
                        slot.activated.loaded.release()
                self._boundary.close()
                self._store.close()

    def __enter__(self) -> PluginHost:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------

    def _slot(self, plugin_id: str) -> _Slot:
        slot = self._slots.get(plugin_id)
        if slot is None:
            known = ", ".join(sorted(self._slots)) or "none"
            raise UnknownPluginError(f"no plugin with id {plugin_id!r} (known: {known})", plugin_id=plugin_id)
        return slot

    def _update_info(self, plugin_id: str, **changes: Any) -> None:
        with self._lock:
            slot = self._slots.get(plugin_id)
            if slot is not None:
                slot.info = dataclasses.replace(slot.info, **changes)

    def _ensure_open(self) -> None:
        if self._closed:
            raise LifecycleError("this PluginHost is closed")

    def _report_trust_problems(self) -> None:
        if self.trust_mode is TrustMode.DISABLED and not self.settings.is_development:
            message = (
                "APERIO_PLUGIN_TRUST_MODE=disabled outside a development environment: plugin files are not"
                " checked at all. Set APERIO_ENVIRONMENT=development for a throwaway sandbox, or use strict."
            )
            warnings.warn(message, AperioWarning, stacklevel=3)
            self._audit.error("host.trust.disabled", environment=self.settings.environment, reason=message)
        for problem in self._env.trust.problems:
            self._audit_problem(problem)

    def _audit_problem(self, problem: TrustProblem) -> None:
        if str(problem) in self._reported:
            return
        self._reported.add(str(problem))
        log = self._audit.error if problem.severity is Severity.ERROR else self._audit.warning
        log("host.trust.problem", subject=problem.subject, reason=problem.message)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


def _propagating_hooks(sources: Iterable[object]) -> Iterable[str]:
    for source in sources:
        for name in dir(source):
            if getattr(getattr(source, name, None), PROPAGATE_ATTRIBUTE, False):
                yield name


def _snapshot(slot: _Slot) -> PluginInfo:
    """The slot's info, with the live state of its worker if it runs in one."""
    plugin = slot.activated.loaded.plugin if slot.activated is not None else None
    if not isinstance(plugin, WorkerPlugin):
        return slot.info
    status = plugin.status()
    return dataclasses.replace(
        slot.info,
        worker_pid=status.pid,
        worker_restarts=status.restarts,
        worker_state=status.state.value,
        worker_containment=status.containment,
        worker_containment_gaps=status.containment_gaps,
    )
