"""`PluginHost`: the one stateful object. It runs the pipeline and changes state only after
everything that can fail has run."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import pluggy
from pydantic import BaseModel

import aperio_hookspecs
from aperio_hookspecs import PROJECT_NAME, PROPAGATE_ATTRIBUTE, Payload
from aperio_hookspecs import specs as api_specs

from . import _activation, _invoke, _lazy
from ._admit import Decision, admit, duplicate_refusal, split_duplicates
from ._audit import default_audit_logger, default_plugin_logger
from ._boundary import Boundary, record_tree
from ._breaker import BreakerState, CircuitBreaker, Permit, incident_of
from ._cache import CACHE_FILE_NAME, DiscoveryCache
from ._catalog import Catalog, CatalogEntry, PluginRegistrations
from ._compat import incompatibility
from ._context import CredentialProvider, new_context
from ._dev import is_development_build
from ._discover import Discovery, SearchRoot, discover, search_roots
from ._guard import ErrorRecorder
from ._loader import forget_modules, import_plugin, restore_on_failure
from ._manifest import inspect_candidate
from ._model import (
    Candidate,
    FailureStage,
    Inspected,
    Isolation,
    LoadReport,
    Origin,
    PluginInfo,
    PluginKind,
    PluginState,
    Refusal,
    SignatureStatus,
    TrustMode,
    Verification,
)
from ._ownership import HostModules, OwnedDistribution, PluginsDirLayout, collision, scan_plugins_dir
from ._settings import HostSettings
from ._state import SQLiteStateStore, StateStore
from ._trust import Severity, TrustProblem, TrustStore, load_trust_store, plugins_dir_problems
from ._verify import verify_installed
from .errors import (
    AperioWarning,
    CircuitOpenError,
    ConfigurationError,
    HandshakeError,
    LifecycleError,
    ManifestError,
    PluginCallError,
    PluginLoadError,
    UnknownPluginError,
    VerificationError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
)
from .importing import TamperedFileError, VerifiedImporter, VerifiedTree, install_importer, remove_importer
from .worker import WorkerPlugin, WorkerSettings

_SIGNATURE_EVENTS = {
    SignatureStatus.VERIFIED: "plugin.signature.verified",
    SignatureStatus.UNSIGNED: "plugin.signature.unsigned",
    SignatureStatus.INVALID: "plugin.signature.invalid",
    SignatureStatus.SKIPPED: "plugin.signature.skipped",
}
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
    prepared: _activation.Prepared | None = None
    registrations: PluginRegistrations = field(default_factory=PluginRegistrations)
    importer: VerifiedImporter | None = None
    breaker: CircuitBreaker | None = None

    @property
    def in_memory(self) -> bool:
        return self.prepared is not None


@dataclass(frozen=True)
class _Activated:
    """An imported and registered plugin, and the importer that serves its verified files."""

    prepared: _activation.Prepared
    registrations: PluginRegistrations
    importer: VerifiedImporter | None
    breaker: CircuitBreaker


class _Refused(Exception):
    """Internal: a stage refused the plugin; carries the refusal to the one place that records it."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


@dataclass(frozen=True)
class _Outcome:
    """The result of running one candidate through inspect, verify and admit."""

    info: PluginInfo
    inspected: Inspected | None
    decision: Decision
    verification: Verification | None = None


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
        self._guard_calls = guard_calls
        self._credential_provider = credential_provider
        self._call_timeout = call_timeout
        self._worker_settings = worker_settings or WorkerSettings(call_timeout=call_timeout)
        self._manager = pluggy.PluginManager(PROJECT_NAME)
        spec_sources: tuple[ModuleType | type, ...] = (api_specs, *hookspecs)
        for source in spec_sources:
            self._manager.add_hookspecs(source)
        self._propagating = frozenset(_propagating_hooks(spec_sources))
        self._store = state_store if state_store is not None else SQLiteStateStore.in_directory(self.settings.state_dir)
        self._slots: dict[str, _Slot] = {}
        self._shadowed: list[PluginInfo] = []
        self._broken: list[str] = []
        self._catalog = Catalog()
        cache_path = self.settings.state_dir / CACHE_FILE_NAME
        self._cache = DiscoveryCache(cache_path) if discovery_cache else None
        self._root_paths: list[Path] = []
        self._lock = threading.RLock()
        self._closed = False
        self._trust = load_trust_store(self.settings)
        self._plugins_root = _resolved(self.settings.plugins_dir)
        self._layout = PluginsDirLayout(self._plugins_root)
        self._host_modules = HostModules(self._plugins_root)
        self._boundary = Boundary(self._plugins_root, self.trust_mode, self._report_dependency)
        self._reported: set[str] = set()  # problems and dependencies already audited by this host
        # Lazy activation (_lazy.py): plugins admitted at load but imported on first use.
        self._pending = _lazy.PendingActivations()
        self._unscanned: Discovery | None = None  # a discovery whose plugins directory is not scanned yet
        self._relay = _lazy.LazyRelay(self._manager.hook, self._activate_declaring)
        # pluggy's relay: `host.hook.<name>(**kwargs)` reaches every enabled plugin (pending ones that
        # declare the hook are activated by its first call). A plain attribute, not a property: a
        # property's call was most of what the relay cost a hook call (read it, never assign it).
        self.hook: _lazy.LazyRelay = self._relay
        self._report_trust_problems()

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
        if self._pending:
            self._activate_declaring(_lazy.registration_hook(kind))
        return self._catalog.of_kind(kind)

    # -- lazy activation (_lazy.py) -------------------------------------------

    def _defer(self, candidate: Candidate, enabled_flag: bool, isolation_override: Isolation | None) -> bool:
        """Record `candidate` as pending if it may wait for its first use; False: bring it up now.

        Imports and hashes nothing. Whatever this cannot decide cheaply (and every refusal)
        is left to the eager path, which reports it at load as before.
        """
        try:
            inspected = inspect_candidate(candidate, self._root_paths, self._cache)
        except ManifestError:
            return False
        development_build = is_development_build(candidate.metadata_dir)
        if not enabled_flag or incompatibility(inspected.api_requirement, self.api_version) is not None:
            return False
        if not _lazy.deferrable(
            inspected,
            activation=self.settings.plugin_activation,
            isolation=self._isolation_of(inspected, isolation_override),
            trust_mode=self.trust_mode,
            untrusted_plugins_dir=self._trust.untrusted_plugins_dir is not None,
            development_build=development_build,
        ):
            return False
        hooks = frozenset(inspected.manifest.hooks or ())
        self._pending.add(_lazy.Pending(candidate.plugin_id, candidate.position, hooks, isolation_override))
        self._slots[candidate.plugin_id] = _Slot(_lazy.pending_info(inspected, enabled_flag), candidate)
        self._audit.info("plugin.activation.pending", plugin_id=candidate.plugin_id, hooks=sorted(hooks))
        return True

    def verify_pending(self) -> LoadReport:
        """Inspect, verify and admit every pending plugin without importing it; return all plugins.

        A pending plugin that would be refused is refused now (state `failed`, as at activation);
        the others stay pending with the signature status verification found. They are verified
        again when activated: this only answers "what would happen", for `aperio plugin list`.
        """
        with self._lock:
            for plugin_id, slot in list(self._slots.items()):
                if plugin_id not in self._pending or slot.candidate is None:
                    continue
                outcome = self._evaluate(slot.candidate, slot.info.enabled_flag)
                if outcome.decision is Decision.REFUSE or outcome.verification is None:
                    self._pending.pop(plugin_id)
                    slot.info = outcome.info
                    continue
                verification = outcome.verification
                slot.info = dataclasses.replace(
                    slot.info,
                    signature_status=verification.status,
                    signature_detail=verification.detail,
                    signer=verification.signer,
                )
            return LoadReport(self.plugins())

    def _activate_declaring(self, *hooks: str) -> None:
        """Bring up every pending plugin that declares one of `hooks`, first on the search path first."""
        with self._lock:
            for pending in self._pending.declaring(hooks):
                self._activate_pending(pending.plugin_id)
            self._relay.update(self._pending.hooks())  # a trigger left by disable() or run() heals here

    def _activate_pending(self, plugin_id: str) -> None:
        pending = self._pending.pop(plugin_id)
        slot = self._slots.get(plugin_id)
        if pending is None or slot is None or slot.candidate is None:
            return
        self._audit.info("plugin.activation.started", plugin_id=plugin_id)
        self._bring_up(slot.candidate, slot.info.enabled_flag, pending.isolation_override)

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
            # Once per load, not per plugin: each call makes every finder on
            # sys.path list its directory again.
            importlib.invalidate_caches()
            # Operator decisions are read once per load, not once per plugin.
            flags = self._store.enabled_flags()
            isolations = self._store.isolation_overrides()
            winners, duplicates = split_duplicates(discovery.candidates)
            for candidate in winners:
                if wanted is not None and candidate.plugin_id not in wanted:
                    continue
                current = self._slots.get(candidate.plugin_id)
                if current is not None and current.info.state in (PluginState.ENABLED, PluginState.DISABLED):
                    continue
                plugin_id = candidate.plugin_id
                flag, isolation = flags.get(plugin_id, True), isolations.get(plugin_id)
                # Plugins asked for by id (`only`: a worker, say) are brought up now, never deferred.
                if wanted is None and self._defer(candidate, flag, isolation):
                    continue
                self._bring_up(candidate, flag, isolation)
            self._shadowed = [
                self._shadowed_info(duplicate, winner)
                for duplicate, winner in duplicates
                if wanted is None or duplicate.plugin_id in wanted
            ]
            if self._cache is not None:
                self._cache.save()
            self._relay.update(self._pending.hooks())  # new triggers, and callers pluggy added
            return LoadReport(self.plugins())

    def _discover(self) -> Discovery:
        # Resolved once per discovery; inspect looks up editable installs' manifests in the same roots.
        roots = self._roots()
        self._root_paths = [root.path for root in roots]
        discovery = discover(roots, self._cache)
        # Who owns what in the plugins directory is read when a plugin is first evaluated, not
        # here: a start whose plugins are all pending (lazy activation) reads no RECORD at all.
        self._unscanned = discovery
        self._broken = [f"{item.name} in {item.root}: {item.reason}" for item in discovery.broken]
        for item in discovery.broken:
            self._audit.warning(
                "plugin.discovery.failed", distribution=item.name, root=str(item.root), reason=item.reason
            )
        return discovery

    def _ensure_scanned(self) -> None:
        if self._unscanned is not None:
            discovery, self._unscanned = self._unscanned, None
            self._scan_plugins_dir(discovery)

    def _scan_plugins_dir(self, discovery: Discovery) -> None:
        """Read who owns what in the plugins directory, serve its unsigned dependencies if the
        trust mode allows it, and audit problems this host has not reported yet."""
        plugins = frozenset(
            c.metadata_dir.name for c in discovery.candidates if c.origin is Origin.PLUGINS_DIR
        ) | frozenset(item.name for item in discovery.broken if item.root == self._plugins_root)
        self._layout = scan_plugins_dir(self._plugins_root, cache=self._cache, plugins=plugins)
        self._host_modules = HostModules(self._plugins_root)  # what the host provides may have changed
        self._boundary.update(self._layout, self._host_modules)
        for problem in plugins_dir_problems(self._layout, self.trust_mode):
            self._audit_problem(problem)

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

    @property
    def plugins_dir_problems(self) -> tuple[TrustProblem, ...]:
        """What the last discovery found in the plugins directory that no admitted code accounts for."""
        with self._lock:
            self._ensure_scanned()
            return tuple(plugins_dir_problems(self._layout, self.trust_mode))

    def _collision(self, inspected: Inspected, verification: Verification) -> str | None:
        candidate = inspected.candidate
        names = set(verification.packages) | {candidate.top_level_package}
        if candidate.origin is not Origin.PLUGINS_DIR:
            # Installed in the host's environment by the operator: only the standard library is checked.
            return collision(names, inspected.distribution)
        owned = self._layout.distribution_at(candidate.metadata_dir)
        if owned is not None:
            names |= owned.import_names
        return collision(names, inspected.distribution, host=self._host_modules, layout=self._layout)

    def _roots(self) -> tuple[SearchRoot, ...]:
        return search_roots(self._search_path, self.settings.plugins_dir)

    def _shadowed_info(self, duplicate: Candidate, winner: Candidate) -> PluginInfo:
        refusal = duplicate_refusal(duplicate, winner)
        self._audit.warning(
            refusal.event, plugin_id=duplicate.plugin_id, distribution=duplicate.describe(), winner=winner.describe()
        )
        return self._failed_info(duplicate, refusal)

    def _evaluate(self, candidate: Candidate, enabled_flag: bool) -> _Outcome:
        """Run inspect, verify and admit for one candidate. Changes no state (but reads the
        plugins directory's ownership if this discovery has not yet)."""
        self._ensure_scanned()
        self._audit.info(
            "plugin.discovered",
            plugin_id=candidate.plugin_id,
            distribution=candidate.describe(),
            origin=candidate.origin.value,
        )
        try:
            inspected = inspect_candidate(candidate, self._root_paths, self._cache)
        except ManifestError as exc:
            refusal = Refusal(FailureStage.INSPECT, exc.message)
            return _Outcome(self._failed_info(candidate, refusal, enabled_flag=enabled_flag), None, Decision.REFUSE)
        verification = verify_installed(inspected, self._trust)
        self._audit.info(
            _SIGNATURE_EVENTS[verification.status],
            plugin_id=candidate.plugin_id,
            distribution=candidate.describe(),
            detail=verification.detail,
            signer=verification.signer,
        )
        admission = admit(
            inspected,
            verification,
            trust_mode=self.trust_mode,
            host_api_version=self.api_version,
            enabled_flag=enabled_flag,
            collision=self._collision(inspected, verification),
            development_build=is_development_build(candidate.metadata_dir),
            development=self.settings.is_development,
        )
        if admission.warning is not None:
            self._audit.warning("plugin.trust.warning", plugin_id=candidate.plugin_id, reason=admission.warning)
        info = _inspected_info(inspected, verification, enabled_flag)
        info = dataclasses.replace(info, development_build=is_development_build(candidate.metadata_dir))
        if admission.refusal is not None:
            return _Outcome(self._refuse(info, admission.refusal), inspected, Decision.REFUSE, verification)
        return _Outcome(info, inspected, admission.decision, verification)

    def _refuse(self, info: PluginInfo, refusal: Refusal) -> PluginInfo:
        fields = {"plugin_id": info.id, "distribution": info.distribution, "stage": refusal.stage.value}
        if refusal.event != "plugin.load.failed":
            self._audit.warning(refusal.event, reason=refusal.reason, **fields)
        self._audit.warning("plugin.load.failed", reason=refusal.reason, **fields)
        return dataclasses.replace(info, state=PluginState.FAILED, error=refusal.reason, failure_stage=refusal.stage)

    def _failed_info(self, candidate: Candidate, refusal: Refusal, *, enabled_flag: bool = True) -> PluginInfo:
        info = PluginInfo(
            id=candidate.plugin_id,
            state=PluginState.DISCOVERED,
            distribution=candidate.distribution,
            version=candidate.version,
            location=str(candidate.root),
            origin=candidate.origin,
            entry_point=candidate.entry_point,
            enabled_flag=enabled_flag,
        )
        return self._refuse(info, refusal)

    def _activate(self, outcome: _Outcome, isolation_override: Isolation | None) -> _Activated:
        """Load and register an admitted plugin. Raises `_Refused`; the manager is untouched on failure.

        In process, a verified plugin is imported through a `VerifiedImporter` that
        executes only the bytes verification hashed; it stays installed while the
        plugin is loaded, for imports the plugin makes later. In a worker, the
        worker re-runs inspect, verify, admit and load itself, and the host
        registers the worker's stand-in exactly as it would the plugin.
        """
        inspected = outcome.inspected
        assert inspected is not None
        plugin_id = inspected.candidate.plugin_id
        breaker = CircuitBreaker(self.settings.breaker_policy, self._breaker_listener(plugin_id))
        plugin: object
        importer: VerifiedImporter | None
        if self._isolation_of(inspected, isolation_override) is Isolation.PROCESS:
            plugin, importer = self._start_worker(plugin_id, inspected.manifest.network), None
        else:
            plugin, importer = self._import_in_process(outcome)
        try:
            prepared = _activation.prepare(
                self._manager,
                inspected,
                plugin,
                guard=self._guard_calls,
                propagating=self._propagating,
                record=self._recorder(plugin_id),
                gate=breaker,
                refuse=lambda hook_name, permit: _circuit_open(plugin_id, hook_name, permit),
            )
            declared = _lazy.declaration_problem(inspected.manifest.hooks, prepared.implementations)
            if declared is not None:
                raise PluginLoadError(declared, plugin_id=plugin_id, distribution=inspected.candidate.describe())
            registrations = _activation.register(self._manager, self._catalog, prepared)
        except PluginLoadError as exc:
            _release(plugin, importer)
            raise _Refused(Refusal(FailureStage.REGISTER, exc.message)) from exc
        return _Activated(prepared, registrations, importer, breaker)

    def _import_in_process(self, outcome: _Outcome) -> tuple[object, VerifiedImporter | None]:
        inspected, verification = outcome.inspected, outcome.verification
        assert inspected is not None
        importer = self._plugin_importer(inspected, verification)
        try:
            plugin = import_plugin(inspected.candidate)
        except PluginLoadError as exc:
            _release(None, importer)
            stage = FailureStage.VERIFY if isinstance(exc.__cause__, TamperedFileError) else FailureStage.LOAD
            raise _Refused(Refusal(stage, exc.message)) from exc
        if importer is not None and importer.refusals:
            # The plugin caught the ImportError its tampered file raised; it is refused all the same.
            _release(None, importer)
            raise _Refused(Refusal(FailureStage.VERIFY, importer.refusals[0].message))
        return plugin, importer

    def _plugin_importer(self, inspected: Inspected, verification: Verification | None) -> VerifiedImporter | None:
        """Install the finder scoped to the plugin's files: its signed statement when verified, its
        RECORD when it is unsigned code from the plugins directory. Raises `_Refused`."""
        candidate = inspected.candidate
        try:
            if verification is not None and verification.status is SignatureStatus.VERIFIED:
                tree = VerifiedTree(candidate.plugin_id, candidate.root, verification.digests, verification.packages)
                return install_importer(tree, code_cache=self.settings.state_dir / CODE_CACHE_DIR)
            if candidate.origin is not Origin.PLUGINS_DIR:
                return None
            owned = self._layout.distribution_at(candidate.metadata_dir)
            if owned is None or not owned.files:
                raise VerificationError(f"{candidate.metadata_dir.name} has no RECORD: no file of it is importable")
            tree = record_tree(owned, candidate.root, candidate.plugin_id)
            return install_importer(tree, code_cache=self.settings.state_dir / CODE_CACHE_DIR)
        except VerificationError as exc:
            raise _Refused(Refusal(FailureStage.VERIFY, exc.message)) from exc

    def _isolation_of(self, inspected: Inspected, override: Isolation | None) -> Isolation:
        """The operator's choice for this plugin, else process if the host default or the plugin asks for it.

        A plugin cannot opt out of a process-wide default: only the operator can, per plugin.
        """
        if override is not None:
            return override
        if Isolation.PROCESS in (self.settings.plugin_isolation, inspected.manifest.isolation):
            return Isolation.PROCESS
        return Isolation.INPROCESS

    def _start_worker(self, plugin_id: str, network: bool) -> WorkerPlugin:
        def failed(_: str, error: WorkerError) -> None:
            # The supervisor has audited the worker's death; the calls it broke are counted (and fed
            # to the breaker, once per worker generation) by the callers' guards or by run(), so
            # here it is only shown.
            with self._lock:
                slot = self._slots.get(plugin_id)
                if slot is not None:
                    slot.info = dataclasses.replace(slot.info, last_call_error=f"worker: {error.message}")

        try:
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
        except HandshakeError as exc:
            stage = FailureStage(exc.stage) if exc.stage else FailureStage.LOAD
            raise _Refused(Refusal(stage, exc.message)) from exc
        except WorkerError as exc:
            raise _Refused(Refusal(FailureStage.LOAD, exc.message)) from exc

    def _bring_up(self, candidate: Candidate, enabled_flag: bool, isolation_override: Isolation | None) -> PluginInfo:
        outcome = self._evaluate(candidate, enabled_flag)
        if outcome.decision is Decision.REFUSE or outcome.inspected is None:
            self._slots[candidate.plugin_id] = _Slot(outcome.info, candidate)
            return outcome.info
        if outcome.decision is Decision.KEEP_DISABLED:
            info = dataclasses.replace(outcome.info, state=PluginState.DISABLED)
            self._slots[candidate.plugin_id] = _Slot(info, candidate)
            self._audit.info("plugin.disabled", plugin_id=candidate.plugin_id, reason="operator flag; not imported")
            return info
        try:
            with restore_on_failure(candidate):
                activated = self._activate(outcome, isolation_override)
        except _Refused as refused:
            info = self._refuse(_tampered_if_verify(outcome.info, refused.refusal), refused.refusal)
            self._slots[candidate.plugin_id] = _Slot(info, candidate)
            return info
        registrations = activated.registrations
        self._catalog.add(candidate.plugin_id, registrations)
        isolation = Isolation.PROCESS if isinstance(activated.prepared.plugin, WorkerPlugin) else Isolation.INPROCESS
        info = _with_registrations(
            dataclasses.replace(outcome.info, state=PluginState.ENABLED, isolation=isolation), registrations
        )
        self._slots[candidate.plugin_id] = _Slot(
            info, candidate, activated.prepared, registrations, activated.importer, activated.breaker
        )
        self._audit.info("plugin.loaded", plugin_id=info.id, distribution=info.distribution, version=info.version)
        self._audit.info("plugin.enabled", plugin_id=info.id)
        return info

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
            if slot.prepared is None:
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
            self._manager.register(slot.prepared.registered, name=plugin_id)
            self._catalog.add(plugin_id, slot.registrations)
            slot.info = dataclasses.replace(slot.info, state=PluginState.ENABLED, enabled_flag=True)
            self._audit.info("plugin.enabled", plugin_id=plugin_id)
            return slot.info

    def disable(self, plugin_id: str) -> PluginInfo:
        """Disable a plugin and persist the decision. It stays in memory but receives no calls,
        and is not imported at the next start. Raises `UnknownPluginError`."""
        with self._lock:
            slot = self._slot(plugin_id)
            self._pending.pop(plugin_id)  # a disabled plugin is never activated; enable() brings it up
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
            self._pending.pop(plugin_id)
            self._drop_from_memory(slot)
            slot.info = _with_registrations(
                dataclasses.replace(slot.info, state=PluginState.UNLOADED), PluginRegistrations()
            )
            self._audit.info("plugin.unloaded", plugin_id=plugin_id)
            return slot.info

    def reload(self, plugin_id: str) -> PluginInfo:
        """Re-read, re-verify and re-import a plugin from disk in place, keeping enabled or disabled.

        Raises `PluginLoadError` if the new files cannot be brought up; a plugin
        that was loaded then keeps running the version it had.
        """
        with self._lock:
            slot = self._slot(plugin_id)
            self._pending.pop(plugin_id)  # reloaded now, from disk, like a plugin never loaded
            candidate = self._current_candidate(plugin_id)
            enabled_flag = self._store.enabled_flags().get(plugin_id, True)
            isolation_override = self._store.isolation_overrides().get(plugin_id)
            if slot.prepared is None:
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
        old = slot.prepared
        assert old is not None
        was_enabled = slot.info.state is PluginState.ENABLED
        outcome = self._evaluate(candidate, enabled_flag)
        if outcome.inspected is None or outcome.decision is Decision.REFUSE:
            return self._reload_failed(plugin_id, outcome.info.error or "refused")
        if was_enabled:
            self._manager.unregister(name=plugin_id)
        try:
            with restore_on_failure(candidate):
                activated = self._activate(outcome, isolation_override)
        except _Refused as refused:
            if was_enabled:
                self._manager.register(old.registered, name=plugin_id)
            return self._reload_failed(plugin_id, refused.refusal.reason)
        prepared, registrations = activated.prepared, activated.registrations
        _release(old.plugin, slot.importer)
        slot.importer = activated.importer
        slot.breaker = activated.breaker
        if was_enabled:
            self._catalog.add(plugin_id, registrations)
        else:
            # A disabled plugin is re-imported and its registrations checked,
            # but it stays out of the manager until it is enabled.
            self._manager.unregister(name=plugin_id)
        state = PluginState.ENABLED if was_enabled else PluginState.DISABLED
        slot.candidate, slot.prepared, slot.registrations = candidate, prepared, registrations
        slot.info = _with_registrations(
            dataclasses.replace(outcome.info, state=state, call_failures=0, last_call_error=None), registrations
        )
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
            inspected = inspect_candidate(candidate, self._root_paths, self._cache)
            return inspected, verify_installed(inspected, self._trust)

    def _current_candidate(self, plugin_id: str) -> Candidate:
        discovery = self._discover()
        importlib.invalidate_caches()
        winners, _ = split_duplicates(discovery.candidates)
        for candidate in winners:
            if candidate.plugin_id == plugin_id:
                return candidate
        raise LifecycleError(f"plugin {plugin_id!r} is no longer installed on the search path", plugin_id=plugin_id)

    def _drop_from_memory(self, slot: _Slot) -> None:
        plugin_id = slot.info.id
        if slot.info.state is PluginState.ENABLED:
            self._manager.unregister(name=plugin_id)
            self._catalog.remove(plugin_id)
        if slot.candidate is not None:
            forget_modules(slot.candidate)
        _release(slot.prepared.plugin if slot.prepared else None, slot.importer)
        slot.importer = None
        slot.prepared = None
        slot.breaker = None
        slot.registrations = PluginRegistrations()

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
            if plugin_id in self._pending:
                # The kinds it registers first, in search-path order, so that a name two plugins
                # register goes to the same one as at an eager load; then the plugin itself.
                self._activate_declaring(*(_lazy.registration_hook(kind) for kind in self._slot(plugin_id).info.kinds))
                self._activate_pending(plugin_id)
                self._relay.update(self._pending.hooks())
            slot = self._slot(plugin_id)
            if slot.info.state is not PluginState.ENABLED:
                raise LifecycleError(
                    f"plugin {plugin_id!r} is {slot.info.state.value}: it receives no calls", plugin_id=plugin_id
                )
            info, registrations, breaker = slot.info, slot.registrations, slot.breaker
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
            raise _circuit_open(plugin_id, operation.hook_name, permit)
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

    def _recorder(self, plugin_id: str) -> ErrorRecorder:
        # The guard tells the breaker itself, with the call's permit.
        def record(hook_name: str, exc: BaseException) -> None:
            self._record_call_failure(plugin_id, hook_name, exc)

        return record

    def _breaker_listener(self, plugin_id: str) -> Callable[[BreakerState, BreakerState], None]:
        def moved(old: BreakerState, new: BreakerState) -> None:
            with self._lock:
                slot = self._slots.get(plugin_id)
                if slot is not None:
                    slot.info = dataclasses.replace(slot.info, breaker_state=new.value)
            log = self._audit.error if new is BreakerState.OPEN else self._audit.info
            log(_BREAKER_EVENTS[new], plugin_id=plugin_id, previous=old.value)

        return moved

    def _record_call_failure(self, plugin_id: str, hook_name: str, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_TRACEBACK_CHARS:]
        message = f"{hook_name}: {type(exc).__name__}: {exc}"
        with self._lock:
            slot = self._slots.get(plugin_id)
            if slot is not None:
                slot.info = dataclasses.replace(
                    slot.info, call_failures=slot.info.call_failures + 1, last_call_error=message
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
                # The manager's relay: a pending plugin never ran, and is not imported to be told.
                self._manager.hook.aperio_host_shutdown()
            finally:
                # An unguarded host lets a plugin's shutdown error through,
                # but the manager and the store are released all the same.
                for slot in self._slots.values():
                    if slot.info.state is PluginState.ENABLED:
                        self._manager.unregister(name=slot.info.id)
                    _release(slot.prepared.plugin if slot.prepared else None, slot.importer)
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

    def _ensure_open(self) -> None:
        if self._closed:
            raise LifecycleError("this PluginHost is closed")

    @property
    def trust_store(self) -> TrustStore:
        """The trust configuration this host checks plugins against, with the problems found in it."""
        return self._trust

    def _report_trust_problems(self) -> None:
        if self.trust_mode is TrustMode.DISABLED and not self.settings.is_development:
            message = (
                "APERIO_PLUGIN_TRUST_MODE=disabled outside a development environment: plugin files are not"
                " checked at all. Set APERIO_ENVIRONMENT=development for a throwaway sandbox, or use strict."
            )
            warnings.warn(message, AperioWarning, stacklevel=3)
            self._audit.error("host.trust.disabled", environment=self.settings.environment, reason=message)
        for problem in self._trust.problems:
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


def _inspected_info(inspected: Inspected, verification: Verification, enabled_flag: bool) -> PluginInfo:
    candidate = inspected.candidate
    manifest = inspected.manifest
    return PluginInfo(
        id=candidate.plugin_id,
        state=PluginState.DISCOVERED,
        signature_status=verification.status,
        signature_detail=verification.detail,
        signer=verification.signer,
        distribution=inspected.distribution,
        version=inspected.version,
        location=str(candidate.root),
        origin=candidate.origin,
        entry_point=candidate.entry_point,
        api_requirement=inspected.api_requirement,
        summary=manifest.summary,
        kinds=manifest.kinds,
        credential_scopes=manifest.credential_scopes,
        isolation=manifest.isolation,
        enabled_flag=enabled_flag,
    )


def _snapshot(slot: _Slot) -> PluginInfo:
    """The slot's info, with the live state of its worker if it runs in one."""
    plugin = slot.prepared.plugin if slot.prepared is not None else None
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


def _release(plugin: object, importer: VerifiedImporter | None) -> None:
    """Undo what loading a plugin set up outside the manager: its worker, its importer."""
    if isinstance(plugin, WorkerPlugin):
        plugin.stop()
    if importer is not None:
        remove_importer(importer)


def _circuit_open(plugin_id: str, hook_name: str, permit: Permit) -> CircuitOpenError:
    # The permit's retry_in was computed when the breaker refused the call, under its lock.
    if permit.retry_in > 0:
        why = f"is open after repeated failures (next probe in {permit.retry_in:.1f}s)"
    else:
        why = "is half-open: a probe call is in flight, and calls go through again once it succeeds"
    return CircuitOpenError(
        f"plugin {plugin_id!r}: {hook_name} not called, its circuit breaker {why}",
        plugin_id=plugin_id,
        retry_in=permit.retry_in,
    )


def _tampered_if_verify(info: PluginInfo, refusal: Refusal) -> PluginInfo:
    # A file that changed after verification is caught at import: the plugin's
    # signature status is then invalid, whatever verification said a moment earlier.
    if refusal.stage is FailureStage.VERIFY:
        return dataclasses.replace(info, signature_status=SignatureStatus.INVALID)
    return info


def _with_registrations(info: PluginInfo, registrations: PluginRegistrations) -> PluginInfo:
    return dataclasses.replace(
        info,
        connectors=registrations.names(PluginKind.CONNECTOR),
        remediations=registrations.names(PluginKind.REMEDIATION),
        destinations=registrations.names(PluginKind.DESTINATION),
    )
