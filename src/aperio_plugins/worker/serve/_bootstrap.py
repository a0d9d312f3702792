"""Bring up the one plugin a worker serves, through the same pipeline stages as the host, and describe it.

The worker runs discover, inspect, verify (the verified importer), admit, load and
register itself, on what is on disk now, with the stage functions of `pipeline/`; the
parent's word is never taken for any of it. No `PluginHost` is built here: the worker
keeps no state store (enable flags are the parent's decision, it started this worker;
KV lives in the parent, which serves it over the channel).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pluggy

import aperio_hookspecs
from aperio_hookspecs import PROJECT_NAME
from aperio_hookspecs import specs as api_specs

from ..._boundary import Boundary
from ..._breaker import CircuitBreaker
from ..._catalog import Catalog
from ..._model import Isolation, PluginKind, PluginState
from ..._reports import Reporter
from ..._settings import HostSettings
from ..._trust import load_trust_store
from ...errors import AperioError
from ...pipeline import walk
from ...pipeline.admit import split_duplicates
from ...pipeline.discover import resolved_path, survey
from ...pipeline.environment import CODE_CACHE_DIR, Environment
from ._server import Plugin


class LoadFailure(msgspec.Struct, frozen=True):
    message: str
    stage: str | None


def load(plugin_id: str, search_path: Sequence[str], audit_logger: Any) -> tuple[Plugin, dict[str, Any]] | LoadFailure:
    """Load `plugin_id`; return what to serve and its description, or why it did not come up."""
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(api_specs)
    catalog = Catalog()
    try:
        walked = _walk(plugin_id, search_path, audit_logger, manager, catalog)
    except AperioError as exc:
        return LoadFailure(exc.message, None)
    info = walked.info
    if walked.activated is None or info.state is not PluginState.ENABLED:
        stage = info.failure_stage.value if info.failure_stage else None
        return LoadFailure(info.error or f"plugin {plugin_id!r} is {info.state.value}", stage)
    catalog.add(plugin_id, walked.activated.registrations)
    hooks, hook_rows = _hookimpls(manager, plugin_id)
    registrations, registration_rows = _registrations(catalog, plugin_id)
    description = {
        "plugin_id": plugin_id,
        "distribution": info.distribution,
        "version": info.version,
        "hooks": hook_rows,
        "registrations": registration_rows,
    }
    return Plugin(plugin_id, hooks, registrations), description


def _walk(
    plugin_id: str, search_path: Sequence[str], audit: Any, manager: pluggy.PluginManager, catalog: Catalog
) -> walk.Walked:
    """Discover, then walk the one candidate that wins `plugin_id`. Raises `AperioError` for bad settings."""
    settings = HostSettings.from_environment(state_dir=Path.cwd() / "state")
    plugins_root = resolved_path(settings.plugins_dir)
    found = survey(search_path, settings.plugins_dir, plugins_root)

    # The plugins directory's unsigned dependencies are served (and audited) as in the host; the
    # finders stay installed for the life of this process, which serves this one plugin.
    report = Reporter(audit, settings.plugin_trust_mode).dependency
    Boundary(plugins_root, settings.plugin_trust_mode, report).update(found.layout, found.host_modules)
    env = Environment(
        trust=load_trust_store(settings),
        trust_mode=settings.plugin_trust_mode,
        api_version=aperio_hookspecs.API_VERSION,
        audit=audit,
        layout=found.layout,
        host_modules=found.host_modules,
        new_breaker=lambda _: CircuitBreaker(settings.breaker_policy),
        recorder=lambda _: _unused_recorder,
        development=settings.is_development,
        start_worker=None,  # this process is the worker: never a worker of a worker
        code_cache=settings.state_dir / CODE_CACHE_DIR,
        guard_calls=False,  # the plugin's exceptions go to the parent, whose guard records them
        roots=found.roots,
    )
    winners, _ = split_duplicates(found.discovery.candidates)
    for candidate in winners:
        if candidate.plugin_id == plugin_id:
            # Enabled: the parent started this worker, so the operator's flag allowed it.
            return walk.bring_up(candidate, env, True, Isolation.INPROCESS, manager, catalog)
    raise AperioError(f"no installed plugin with id {plugin_id!r} on the worker's search path", plugin_id=plugin_id)


def _unused_recorder(hook_name: str, exc: BaseException) -> None:
    # Never called: the worker does not guard its plugin (guard_calls=False).
    return None


def _hookimpls(manager: pluggy.PluginManager, plugin_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    functions: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for name in sorted(dir(manager.hook)):
        caller = getattr(manager.hook, name, None)
        if name.startswith("_") or not isinstance(caller, pluggy.HookCaller):
            continue
        for implementation in caller.get_hookimpls():
            if implementation.plugin_name != plugin_id:
                continue
            functions[name] = implementation.function
            options = {key: value for key, value in implementation.opts.items()}
            rows.append({"hook": name, "params": list(implementation.argnames), "options": options})
    return functions, rows


def _registrations(catalog: Catalog, plugin_id: str) -> tuple[dict[tuple[str, str], Any], list[dict[str, Any]]]:
    served: dict[tuple[str, str], Any] = {}
    rows: list[dict[str, Any]] = []
    for kind in (PluginKind.CONNECTOR, PluginKind.REMEDIATION, PluginKind.DESTINATION):
        entries = catalog.of_kind(kind)
        for name, entry in entries.items():
            if entry.plugin_id != plugin_id:
                continue
            implementation = entry.implementation
            served[(kind.value, name)] = implementation
            row: dict[str, Any] = {"kind": kind.value, "name": name, "description": entry.description}
            if kind is PluginKind.CONNECTOR:
                row["provider"] = str(getattr(implementation, "provider", ""))
            if kind is PluginKind.REMEDIATION:
                row["action"] = implementation.action
            rows.append(row)
    return served, rows
