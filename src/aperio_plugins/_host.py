"""`PluginHost`: the one stateful object. It keeps the plugins' records and their lifecycle, calls
the pipeline's stages in order (`pipeline/`), and changes state only after everything that can
fail has run."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

import msgspec
from pydantic import BaseModel

import aperio_hookspecs

from . import _installed as installed
from . import _lifecycle as lifecycle
from ._audit import default_audit_logger, default_plugin_logger
from ._cache import CACHE_FILE_NAME, DiscoveryCache
from ._catalog import Catalog, CatalogEntry
from ._lazy import LazyRelay
from ._lazy_state import LazyActivation
from ._lifecycle import Desk
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
from ._plugin_records import Records, Slot, snapshot
from ._settings import HostSettings
from ._state import StateStore
from ._state_url import open_state_store
from ._surroundings import Surroundings
from ._trust import TrustProblem, TrustStore, load_trust_store, plugins_dir_problems
from ._wiring import host_environment, plugin_manager
from .errors import LifecycleError
from .pipeline import walk
from .pipeline.admit import split_duplicates
from .pipeline.discover import Discovery
from .worker import WorkerSettings

if TYPE_CHECKING:
    from aperio_hookspecs import Payload

    from ._context import CredentialProvider


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
        self._manager, propagating = plugin_manager(hookspecs)
        self._store = state_store if state_store is not None else open_state_store(self.settings)
        self._records = Records(self._audit)
        self._lock = self._records.lock
        self._catalog = Catalog()
        self._desk = Desk(self._store, self._manager, self._catalog, self._audit)
        self._closed = False
        self._surroundings = Surroundings(self.settings, self._search_path, self._audit)
        self._env = host_environment(
            self.settings,
            self._records,
            trust=load_trust_store(self.settings),
            api_version=self.api_version,
            audit=self._audit,
            plugin_logger=self._plugin_logger,
            search_path=self._search_path,
            worker_settings=worker_settings or WorkerSettings(call_timeout=call_timeout),
            guard_calls=guard_calls,
            propagating=propagating,
            cache=DiscoveryCache(self.settings.state_dir / CACHE_FILE_NAME) if discovery_cache else None,
            plugins_root=self._surroundings.plugins_root,
        )
        # Lazy activation (_lazy.py): plugins admitted at load but imported on first use.
        self._lazy = LazyActivation(
            self.settings.plugin_activation, self._manager, self._records, self._bring_up, self._audit
        )
        # `host.hook.<name>(**kwargs)` reaches every enabled plugin; its first call activates the pending ones
        # that declare the hook. A plain attribute: a property's call was most of what a hook call cost.
        self.hook: LazyRelay = self._lazy.relay
        self._surroundings.reporter.trust_configuration(self.settings, self._env.trust)

    # -- relay and catalog ---------------------------------------------------

    @property
    def trust_mode(self) -> TrustMode:
        return self.settings.plugin_trust_mode

    @property
    def connectors(self) -> Mapping[str, CatalogEntry]:
        return self._catalog_of(PluginKind.CONNECTOR)

    @property
    def remediations(self) -> Mapping[str, CatalogEntry]:
        return self._catalog_of(PluginKind.REMEDIATION)

    @property
    def destinations(self) -> Mapping[str, CatalogEntry]:
        return self._catalog_of(PluginKind.DESTINATION)

    def _catalog_of(self, kind: PluginKind) -> Mapping[str, CatalogEntry]:
        self._lazy.catalog_of(kind)  # pending plugins that may register entries of `kind` come up first
        return self._catalog.of_kind(kind)

    def plugins(self) -> tuple[PluginInfo, ...]:
        """Return a snapshot of every plugin the host knows, by id, duplicates after their winner."""
        return self._records.snapshot()

    def get(self, plugin_id: str) -> PluginInfo:
        """Return the snapshot for `plugin_id`; raise `UnknownPluginError` if the host has none."""
        return snapshot(self._records.slot(plugin_id))

    @property
    def broken_distributions(self) -> tuple[str, ...]:
        """Distributions whose metadata could not be read during the last discovery."""
        return self._surroundings.broken

    @property
    def plugins_dir_problems(self) -> tuple[TrustProblem, ...]:
        """What the last discovery found in the plugins directory that no admitted code accounts for."""
        with self._lock:
            self._ensure_scanned()
            return tuple(plugins_dir_problems(self._env.layout, self.trust_mode))

    @property
    def trust_store(self) -> TrustStore:
        """The trust configuration this host checks plugins against, with the problems found in it."""
        return self._env.trust

    def reload_trust(self) -> TrustStore:
        """Re-read the trust configuration (keys, identities) and return it; plugins brought up
        from now on are checked against it, those already loaded keep running. The fleet agent
        calls it before retrying a release refused for a signer it did not trust."""
        trust = load_trust_store(self.settings)
        with self._lock:
            self._env = msgspec.structs.replace(self._env, trust=trust)
        return trust

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
                current = self._records.slots.get(plugin_id)
                if (wanted is not None and plugin_id not in wanted) or (
                    current is not None and current.info.state in (PluginState.ENABLED, PluginState.DISABLED)
                ):
                    continue
                flag, isolation = flags.get(plugin_id, True), isolations.get(plugin_id)
                # Plugins asked for by id (`only`: a worker, say) are brought up now, never deferred.
                if wanted is None and self._lazy.defer(candidate, self._env, flag, isolation):
                    continue
                self._bring_up(candidate, flag, isolation)
            self._records.shadowed = [
                walk.shadowed(duplicate, winner, self._env)
                for duplicate, winner in duplicates
                if wanted is None or duplicate.plugin_id in wanted
            ]
            if self._env.cache is not None:
                self._env.cache.save()
            self._lazy.refresh()  # new triggers, and callers pluggy added
            return LoadReport(self.plugins())

    def verify_pending(self) -> LoadReport:
        """Inspect, verify and admit every pending plugin without importing it; return all plugins
        (a pending plugin that would be refused is refused now, as at activation)."""
        with self._lock:
            self._ensure_scanned()
            self._lazy.verify_pending(self._env)
            return LoadReport(self.plugins())

    def _discover(self) -> Discovery:
        discovery, self._env = self._surroundings.discover(self._env)
        return discovery

    def _ensure_scanned(self) -> None:
        self._env = self._surroundings.scanned(self._env)  # the plugins directory's ownership, once per discovery

    def _bring_up(self, candidate: Candidate, enabled_flag: bool, isolation_override: Isolation | None) -> PluginInfo:
        self._ensure_scanned()
        walked = walk.bring_up(candidate, self._env, enabled_flag, isolation_override, self._manager, self._catalog)
        self._records.slots[candidate.plugin_id] = Slot(walked.info, candidate, walked.activated)
        if walked.activated is not None:
            self._catalog.add(candidate.plugin_id, walked.activated.registrations)
            info = walked.info
            self._audit.info("plugin.loaded", plugin_id=info.id, distribution=info.distribution, version=info.version)
            self._audit.info("plugin.enabled", plugin_id=info.id)
        return walked.info

    # -- operator lifecycle --------------------------------------------------

    def persist_isolation(self, plugin_id: str, isolation: Isolation | None) -> None:
        """Record where an installed plugin runs (`process` or `inprocess`; None: the host default).

        Imports nothing; it takes effect the next time the plugin is loaded (reload
        or the next start). Raises `UnknownPluginError` for an id nobody provides.
        """
        installed.check_isolation(isolation)
        with self._lock:
            installed.require_installed(plugin_id, self._discover().candidates, self._records.slots)
            installed.persist_isolation(self._store, self._audit, plugin_id, isolation)

    def persist_enabled(self, plugin_id: str, enabled: bool) -> None:
        """Record the operator's enable flag for an installed plugin without importing anything.

        It takes effect at the next `load()`. Raises `UnknownPluginError` when no
        distribution on the search path provides `plugin_id`.
        """
        with self._lock:
            installed.require_installed(plugin_id, self._discover().candidates, self._records.slots)
            installed.persist_enabled(self._store, self._audit, plugin_id, enabled)

    def enable(self, plugin_id: str) -> PluginInfo:
        """Enable a plugin and persist the decision; import it first if it was never loaded.

        Raises `UnknownPluginError`, or `LifecycleError` for a failed plugin
        (reload it once fixed) or a catalog name another plugin now holds.
        """
        with self._lock:
            slot = self._records.slot(plugin_id)
            return self._keep(lifecycle.enable(self._desk, slot, self._current_candidate, self._bring_up_slot))

    def disable(self, plugin_id: str) -> PluginInfo:
        """Disable a plugin and persist the decision. It stays in memory but receives no calls,
        and is not imported at the next start. Raises `UnknownPluginError`."""
        with self._lock:
            slot = self._records.slot(plugin_id)
            self._lazy.forget(plugin_id)  # a disabled plugin is never activated; enable() brings it up
            return self._keep(lifecycle.disable(self._desk, slot))

    def unload(self, plugin_id: str) -> PluginInfo:
        """Remove a plugin from memory; its files stay and the next `load()` brings it back.

        Raises `LifecycleError` if the plugin is not loaded.
        """
        with self._lock:
            slot = self._records.slot(plugin_id)
            self._lazy.forget(plugin_id)  # only an enabled plugin is ever pending, and unload() takes it
            return self._keep(lifecycle.unload(self._desk, slot))

    def reload(self, plugin_id: str) -> PluginInfo:
        """Re-read, re-verify and re-import a plugin from disk in place, keeping enabled or disabled.

        Raises `PluginLoadError` if the new files cannot be brought up; a plugin
        that was loaded then keeps running the version it had.
        """
        with self._lock:
            slot = self._records.slot(plugin_id)
            self._lazy.forget(plugin_id)  # reloaded now, from disk, like a plugin never loaded
            candidate = self._current_candidate(plugin_id)
            self._ensure_scanned()
            return self._keep(lifecycle.reload(self._desk, self._env, slot, candidate, self._bring_up_slot))

    def verify(self, plugin_id: str) -> tuple[Inspected, Verification]:
        """Inspect and verify the installed plugin `plugin_id` from disk, importing nothing. Raises
        `UnknownPluginError` if it is not installed and `ManifestError` if it cannot be inspected."""
        with self._lock:
            return installed.verify_from_disk(plugin_id, self._discover().candidates, self._env)

    def _current_candidate(self, plugin_id: str) -> Candidate:
        return installed.find(plugin_id, self._discover().candidates)

    def _bring_up_slot(self, candidate: Candidate, enabled_flag: bool, isolation_override: Isolation | None) -> Slot:
        self._bring_up(candidate, enabled_flag, isolation_override)
        return self._records.slots[candidate.plugin_id]

    def _keep(self, slot: Slot) -> PluginInfo:
        self._records.slots[slot.info.id] = slot
        return slot.info

    # -- calls ---------------------------------------------------------------

    def run(self, plugin_id: str, payload: Payload | Mapping[str, Any], *, timeout: float | None = None) -> BaseModel:
        """Invoke one plugin directly: a `SyncRequest` runs a connector, a `RemediationRequest` a
        remediation handler, a `DeliveryBatch` a destination. Returns the validated result envelope.

        Raises `HookError` for a payload that is malformed or names nothing the
        plugin provides, `LifecycleError` if the plugin is not enabled, and
        `PluginCallError` when the plugin raises or returns something malformed.
        Findings in a sync result are broadcast through `aperio_finding_raised`.
        """
        from ._run import run_plugin  # payload models and invocation: only a host that runs plugins needs them

        self._lazy.before_run(plugin_id)
        result = run_plugin(
            self._records,
            plugin_id,
            payload,
            store=self._store,
            provider=self._credential_provider,
            logger=self._plugin_logger,
            timeout=self._call_timeout if timeout is None else timeout,
            record=self._env.recorder(plugin_id),
        )
        if isinstance(result, aperio_hookspecs.SyncResult):
            for finding in result.findings:
                self.hook.aperio_finding_raised(finding=finding)
        return result

    def deliver(self, destination: str, events: Iterable[Any], config: Mapping[str, Any] | None = None) -> str:
        """Queue a batch for `destination` in the state store's outbox, durable when this returns, for a
        `Dispatcher` to deliver at least once. Returns the batch's idempotency key.

        Raises `DeliveryError` (unknown destination, malformed envelopes) and `StateStoreError`.
        """
        from . import _dispatch  # the outbox's code loads only for hosts that deliver (9 ms at import)

        return _dispatch.enqueue(_dispatch.outbox_of(self._store), self.destinations, destination, events, config)

    # -- shutdown ------------------------------------------------------------

    def close(self) -> None:
        """Tell every enabled plugin the host is shutting down, then release the state store. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                # The manager's relay: a pending plugin never ran, and is not imported to be told.
                self._manager.hook.aperio_host_shutdown()
            finally:
                # An unguarded host lets a plugin's shutdown error through,
                # but the manager and the store are released all the same.
                for slot in self._records.slots.values():
                    if slot.info.state is PluginState.ENABLED:
                        self._manager.unregister(name=slot.info.id)
                    if slot.activated is not None:
                        slot.activated.loaded.release()
                self._surroundings.boundary.close()
                self._store.close()

    def __enter__(self) -> PluginHost:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------

    def _ensure_open(self) -> None:
        if self._closed:
            raise LifecycleError("this PluginHost is closed")
