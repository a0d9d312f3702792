"""The operator's actions on a plugin the host has a record of: enable, disable, unload, reload in place.

Each function checks the record first, then changes the persisted flag, pluggy's manager and the
catalog in an order that leaves them consistent when a step fails, and returns the plugin's new
record. `PluginHost` holds its lock around the call and stores what comes back. A plugin that was
never imported is brought up by the host's own walk (`BringUp`), which records it as a load does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import msgspec
import pluggy

from ._catalog import Catalog, PluginRegistrations
from ._model import Candidate, Isolation, PluginState
from ._plugin_records import Slot
from ._state import OperatorDecisions
from .errors import LifecycleError, PluginLoadError
from .pipeline import walk
from .pipeline.environment import Environment, Refused
from .pipeline.load import forget_modules

BringUp = Callable[[Candidate, bool, Isolation | None], Slot]
"""(candidate, enabled flag, isolation override) -> its record after the host's walk of the whole pipeline."""


class Desk(msgspec.Struct, frozen=True):
    """What an operator's action changes besides the plugin's record, and where it is audited."""

    decisions: OperatorDecisions
    manager: pluggy.PluginManager
    catalog: Catalog
    audit: Any


def enable(desk: Desk, slot: Slot, candidate_of: Callable[[str], Candidate], bring_up: BringUp) -> Slot:
    """Return the record of `slot`'s plugin enabled, the decision persisted; a plugin never imported is
    brought up (`candidate_of` finds it on the search path).

    Raises `LifecycleError` for a failed plugin (reload it once fixed) or a catalog name another plugin
    now holds, and `PluginLoadError` when a plugin brought up now does not come up enabled.
    """
    plugin_id, state = slot.info.id, slot.info.state
    if state is PluginState.ENABLED:
        desk.decisions.set_enabled(plugin_id, True)
        return slot
    if state is PluginState.FAILED:
        raise LifecycleError(
            f"plugin {plugin_id!r} failed ({slot.info.error}); fix it, then reload it", plugin_id=plugin_id
        )
    if slot.activated is None:
        desk.decisions.set_enabled(plugin_id, True)
        brought = bring_up(candidate_of(plugin_id), True, desk.decisions.isolation_overrides().get(plugin_id))
        if brought.info.state is not PluginState.ENABLED:
            raise PluginLoadError(
                f"plugin {plugin_id!r} could not be enabled: {brought.info.error}", plugin_id=plugin_id
            )
        return brought
    conflict = desk.catalog.conflict(plugin_id, slot.registrations)
    if conflict is not None:
        raise LifecycleError(f"plugin {plugin_id!r} cannot be enabled: {conflict}", plugin_id=plugin_id)
    desk.decisions.set_enabled(plugin_id, True)
    desk.manager.register(slot.activated.prepared.registered, name=plugin_id)
    desk.catalog.add(plugin_id, slot.registrations)
    desk.audit.info("plugin.enabled", plugin_id=plugin_id)
    return dataclasses.replace(
        slot, info=msgspec.structs.replace(slot.info, state=PluginState.ENABLED, enabled_flag=True)
    )


def disable(desk: Desk, slot: Slot) -> Slot:
    """Return the record of `slot`'s plugin disabled, the decision persisted: it stays in memory, out of
    the manager and the catalog, and is not imported at the next start."""
    plugin_id = slot.info.id
    desk.decisions.set_enabled(plugin_id, False)
    if slot.info.state is PluginState.ENABLED:
        desk.manager.unregister(name=plugin_id)
        desk.catalog.remove(plugin_id)
    if slot.info.state is not PluginState.DISABLED:
        desk.audit.info("plugin.disabled", plugin_id=plugin_id, previous=slot.info.state.value)
    return dataclasses.replace(
        slot, info=msgspec.structs.replace(slot.info, state=PluginState.DISABLED, enabled_flag=False)
    )


def unload(desk: Desk, slot: Slot) -> Slot:
    """Return the record of `slot`'s plugin unloaded: out of the manager, its modules forgotten and its
    loaded code (or worker) released. Raises `LifecycleError` if it is not loaded."""
    plugin_id, state = slot.info.id, slot.info.state
    if state not in (PluginState.ENABLED, PluginState.DISABLED):
        raise LifecycleError(f"plugin {plugin_id!r} is {state.value}, not loaded", plugin_id=plugin_id)
    if state is PluginState.ENABLED:
        desk.manager.unregister(name=plugin_id)
        desk.catalog.remove(plugin_id)
    if slot.candidate is not None:
        forget_modules(slot.candidate)
    if slot.activated is not None:
        slot.activated.loaded.release()
    unloaded = msgspec.structs.replace(slot.info, state=PluginState.UNLOADED)
    desk.audit.info("plugin.unloaded", plugin_id=plugin_id)
    return Slot(walk.with_registrations(unloaded, PluginRegistrations()), slot.candidate)


def reload(desk: Desk, env: Environment, slot: Slot, candidate: Candidate, bring_up: BringUp) -> Slot:
    """Return the record of the plugin re-read, re-verified and re-imported from `candidate` (its files
    now), enabled or disabled as it was; one not loaded is brought up (`env`: the host's, scanned).

    Raises `PluginLoadError` if the new files cannot be brought up; a plugin that was loaded then
    keeps running the version it had.
    """
    plugin_id = candidate.plugin_id
    enabled_flag = desk.decisions.enabled_flags().get(plugin_id, True)
    isolation = desk.decisions.isolation_overrides().get(plugin_id)
    if slot.activated is None:
        brought = bring_up(candidate, enabled_flag, isolation)
        if brought.info.state is PluginState.FAILED:
            desk.audit.warning("plugin.reload.failed", plugin_id=plugin_id, reason=brought.info.error)
            raise PluginLoadError(f"reload of {plugin_id!r} failed: {brought.info.error}", plugin_id=plugin_id)
        desk.audit.info("plugin.reload.completed", plugin_id=plugin_id, state=brought.info.state.value)
        return brought
    return _reload_in_memory(desk, env, slot, candidate, enabled_flag, isolation)


def _reload_in_memory(
    desk: Desk, env: Environment, slot: Slot, candidate: Candidate, enabled_flag: bool, isolation: Isolation | None
) -> Slot:
    plugin_id = candidate.plugin_id
    old = slot.activated
    assert old is not None
    was_enabled = slot.info.state is PluginState.ENABLED
    try:
        evaluated, activated = walk.reactivate(
            candidate, env, enabled_flag, isolation, desk.manager, desk.catalog, old, was_enabled
        )
    except Refused as refused:
        reason = refused.refusal.reason
        desk.audit.warning("plugin.reload.failed", plugin_id=plugin_id, reason=reason)
        raise PluginLoadError(
            f"reload of {plugin_id!r} failed, the loaded version keeps running: {reason}", plugin_id=plugin_id
        ) from refused
    old.loaded.release()
    if was_enabled:
        desk.catalog.add(plugin_id, activated.registrations)
    else:
        # A disabled plugin is re-imported and its registrations checked,
        # but it stays out of the manager until it is enabled.
        desk.manager.unregister(name=plugin_id)
    state = PluginState.ENABLED if was_enabled else PluginState.DISABLED
    fresh = msgspec.structs.replace(evaluated.info, state=state, call_failures=0, last_call_error=None)
    info = walk.with_registrations(fresh, activated.registrations)
    desk.audit.info("plugin.reload.completed", plugin_id=plugin_id, version=info.version, state=state.value)
    return Slot(info, candidate, activated)
