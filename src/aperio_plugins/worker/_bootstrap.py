"""Bring up the one plugin a worker serves, through the host's own pipeline, and describe it.

The worker builds a `PluginHost` of its own and loads only its plugin id:
inspect, verify (the verified importer), admit and load all run again here,
on what is on disk now. The parent's word is never taken for any of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from .._host import PluginHost
from .._model import Isolation, PluginKind, PluginState
from .._settings import HostSettings
from .._state import SeenIndex
from ..errors import AperioError, StateStoreError
from ._server import Plugin


class StatelessStore:
    """A `StateStore` for the worker's own host: every plugin enabled and in process, no KV.

    Enable flags are the parent's decision (it started this worker), isolation is
    this process itself, and KV lives in the parent, which serves it over the channel.
    """

    def __init__(self, plugin_id: str) -> None:
        self._plugin_id = plugin_id

    def enabled_flags(self) -> dict[str, bool]:
        return {}

    def isolation_overrides(self) -> dict[str, Isolation]:
        # A worker runs its one plugin in process; anything else would start a worker of a worker.
        return {self._plugin_id: Isolation.INPROCESS}

    def set_isolation(self, plugin_id: str, isolation: Isolation | None) -> None:
        return None

    def set_enabled(self, plugin_id: str, enabled: bool) -> None:
        return None

    def forget_plugin(self, plugin_id: str, *, purge_data: bool = True) -> None:
        return None

    def seen_index(self, source: str) -> SeenIndex | None:
        return None

    def record_index(self, source: str, seen: SeenIndex) -> None:
        return None

    def kv_get(self, plugin_id: str, key: str) -> str | None:
        raise StateStoreError("a worker keeps no KV; the host serves it")

    def kv_set(self, plugin_id: str, key: str, value: str) -> None:
        raise StateStoreError("a worker keeps no KV; the host serves it")

    def kv_delete(self, plugin_id: str, key: str) -> None:
        raise StateStoreError("a worker keeps no KV; the host serves it")

    def kv_keys(self, plugin_id: str, prefix: str = "") -> list[str]:
        raise StateStoreError("a worker keeps no KV; the host serves it")

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class LoadFailure:
    message: str
    stage: str | None


def load(plugin_id: str, search_path: Sequence[str], audit_logger: Any) -> tuple[Plugin, dict[str, Any]] | LoadFailure:
    """Load `plugin_id`; return what to serve and its description, or why it did not come up."""
    try:
        settings = HostSettings.from_environment(state_dir=Path.cwd() / "state")
        host = PluginHost(
            settings,
            search_path=search_path,
            state_store=StatelessStore(plugin_id),
            audit_logger=audit_logger,
            plugin_logger=audit_logger,  # unused here (a worker's calls log through the host), and not structlog
            guard_calls=False,  # the plugin's exceptions go to the parent, whose guard records them
            discovery_cache=False,
        )
        host.load(only=[plugin_id])
        info = host.get(plugin_id)
    except AperioError as exc:
        return LoadFailure(exc.message, None)
    if info.state is not PluginState.ENABLED:
        stage = info.failure_stage.value if info.failure_stage else None
        return LoadFailure(info.error or f"plugin {plugin_id!r} is {info.state.value}", stage)
    hooks, hook_rows = _hookimpls(host, plugin_id)
    registrations, registration_rows = _registrations(host, plugin_id)
    description = {
        "plugin_id": plugin_id,
        "distribution": info.distribution,
        "version": info.version,
        "hooks": hook_rows,
        "registrations": registration_rows,
    }
    return Plugin(plugin_id, hooks, registrations), description


def _hookimpls(host: PluginHost, plugin_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    functions: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for name in sorted(dir(host.hook)):
        caller = getattr(host.hook, name, None)
        if name.startswith("_") or not isinstance(caller, pluggy.HookCaller):
            continue
        for implementation in caller.get_hookimpls():
            if implementation.plugin_name != plugin_id:
                continue
            functions[name] = implementation.function
            options = {key: value for key, value in implementation.opts.items()}
            rows.append({"hook": name, "params": list(implementation.argnames), "options": options})
    return functions, rows


def _registrations(host: PluginHost, plugin_id: str) -> tuple[dict[tuple[str, str], Any], list[dict[str, Any]]]:
    catalog = {
        PluginKind.CONNECTOR: host.connectors,
        PluginKind.REMEDIATION: host.remediations,
        PluginKind.DESTINATION: host.destinations,
    }
    served: dict[tuple[str, str], Any] = {}
    rows: list[dict[str, Any]] = []
    for kind, entries in catalog.items():
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
