"""Register: put an imported plugin into the PluginManager, guarded, and collect its catalog entries.

Everything here either completes or leaves the PluginManager as it found it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import msgspec
import pluggy

from .._breaker import CircuitBreaker, Permit
from .._catalog import Catalog, PluginRegistrations, RegistrationError, collect_registrations
from .._guard import ErrorRecorder, Gate, Refuse, guard_implementation, plugin_faults, positional_parameters
from .._lazy import declaration_problem
from .._model import FailureStage, Inspected, Refusal
from ..errors import CircuitOpenError, PluginLoadError
from .environment import Environment, Refused
from .load import Loaded


class GuardedPlugin(types.ModuleType):
    """Stands in for a plugin object in the PluginManager: the same hookimpls, each guarded.

    Guards live in the object's `__dict__` as plain functions, which is where
    every pluggy version finds hookimpls. A module object, because pluggy scans
    `dir()` of what it registers and a module's `dir()` is its `__dict__` alone,
    not the thirty attributes every instance inherits from `object`.
    """

    def __init__(self, plugin_id: str) -> None:
        super().__init__(f"<guarded plugin {plugin_id}>")


class Prepared(msgspec.Struct, frozen=True):
    """An imported plugin, ready to register: its object, what pluggy will hold, and its raw hookimpls."""

    inspected: Inspected
    plugin: object
    registered: object
    implementations: dict[str, Callable[..., Any]]

    @property
    def plugin_id(self) -> str:
        return self.inspected.candidate.plugin_id


def _load_error(inspected: Inspected, message: str) -> PluginLoadError:
    candidate = inspected.candidate
    return PluginLoadError(message, plugin_id=candidate.plugin_id, distribution=candidate.describe())


def prepare(
    manager: pluggy.PluginManager,
    inspected: Inspected,
    plugin: object,
    *,
    guard: bool,
    propagating: frozenset[str],
    record: ErrorRecorder,
    gate: Gate | None = None,
    refuse: Refuse | None = None,
) -> Prepared:
    """Return the plugin ready for registration; raise `PluginLoadError` for a hook the API does not have."""
    implementations: dict[str, Callable[..., Any]] = {}
    proxy = GuardedPlugin(inspected.candidate.plugin_id)
    convert = plugin_faults(inspected.candidate.plugin_id, inspected.candidate.describe())
    for attribute in dir(plugin):
        options = manager.parse_hookimpl_opts(plugin, attribute)
        if options is None:
            continue
        function = getattr(plugin, attribute)
        hook_name = options.get("specname") or attribute
        caller = getattr(manager.hook, hook_name, None)
        if (caller is None or not caller.has_spec()) and not options.get("optionalhook"):
            raise _load_error(inspected, f"implements {hook_name!r}, which is not a hook of this plugin API")
        implementations[hook_name] = function
        if guard:
            is_wrapper = bool(options.get("wrapper") or options.get("hookwrapper"))
            guarded = guard_implementation(
                function,
                hook_name,
                record,
                propagate=hook_name in propagating,
                is_wrapper=is_wrapper,
                gate=gate,
                refuse=refuse,
                convert=convert,
            )
            setattr(proxy, attribute, guarded)
    return Prepared(inspected, plugin, proxy if guard else plugin, implementations)


def _call_registration_hook(prepared: Prepared) -> Callable[[str, Callable[[Any], None]], None]:
    def call(hook_name: str, register: Callable[[Any], None]) -> None:
        function = prepared.implementations.get(hook_name)
        if function is None:
            return
        names = positional_parameters(function) or []
        try:
            function(**{name: register for name in names if name == "register"})
        except RegistrationError:
            raise
        except (Exception, SystemExit) as exc:
            raise RegistrationError(f"{hook_name} raised {type(exc).__name__}: {exc}") from exc

    return call


def register(manager: pluggy.PluginManager, catalog: Catalog, prepared: Prepared) -> PluginRegistrations:
    """Register `prepared` and return its catalog entries, checked against `catalog`.

    Raises `PluginLoadError` (leaving the manager without the plugin) when a
    hookimpl does not match its spec, a registration hook fails, or an entry
    clashes with another plugin's.
    """
    inspected = prepared.inspected
    plugin_id = prepared.plugin_id
    try:
        manager.register(prepared.registered, name=plugin_id)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise _load_error(inspected, f"hookimpl does not match its spec: {exc}") from None
    try:
        registrations = collect_registrations(plugin_id, _call_registration_hook(prepared), inspected.manifest.kinds)
        conflict = catalog.conflict(plugin_id, registrations)
        if conflict is not None:
            raise RegistrationError(conflict)
    except RegistrationError as exc:
        manager.unregister(name=plugin_id)
        raise _load_error(inspected, str(exc)) from None
    return registrations


class Activated(msgspec.Struct, frozen=True):
    """A registered plugin: what pluggy holds, its catalog entries, what was loaded, its breaker."""

    prepared: Prepared
    registrations: PluginRegistrations
    loaded: Loaded
    breaker: CircuitBreaker


def register_plugin(loaded: Loaded, env: Environment, manager: pluggy.PluginManager, catalog: Catalog) -> Activated:
    """The register stage: put `loaded.plugin` into `manager`, each hookimpl guarded (the guard consults
    a new circuit breaker), and collect its registrations, checked against `catalog`, which it does not change.

    Raises `Refused` (stage register) with the manager as it was and `loaded` released.
    """
    plugin_id = loaded.inspected.candidate.plugin_id
    breaker = env.new_breaker(plugin_id)
    try:
        prepared = prepare(
            manager,
            loaded.inspected,
            loaded.plugin,
            guard=env.guard_calls,
            propagating=env.propagating,
            record=env.recorder(plugin_id),
            gate=breaker,
            refuse=lambda hook_name, permit: circuit_open(plugin_id, hook_name, permit),
        )
        # A manifest's hooks declaration is what lazy activation trusts to know when to import the
        # plugin: one that does not match the module is refused here, before the plugin is registered.
        declared = declaration_problem(loaded.inspected.manifest.hooks, prepared.implementations)
        if declared is not None:
            raise _load_error(loaded.inspected, declared)
        registrations = register(manager, catalog, prepared)
    except PluginLoadError as exc:
        loaded.release()
        raise Refused(Refusal(FailureStage.REGISTER, exc.message)) from exc
    return Activated(prepared, registrations, loaded, breaker)


def circuit_open(plugin_id: str, hook_name: str, permit: Permit) -> CircuitOpenError:
    """The error a call refused by the plugin's open (or half-open) breaker raises."""
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
