"""The catalog: connectors, remediation actions and destinations by name, and who registered each."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgspec

from ._model import PluginKind

if TYPE_CHECKING:
    REGISTRATION_HOOKS: dict[str, tuple[PluginKind, type[Any]]]


@functools.cache
def _registration_hooks() -> dict[str, tuple[PluginKind, type[Any]]]:
    # The SDK's extension classes: importing them builds every envelope model, so they are imported on
    # first use and a host that only lists plugins never pays for them (issue 11, docs/performance.md).
    from aperio_hookspecs import Connector, Destination, RemediationHandler

    return {
        "aperio_register_connectors": (PluginKind.CONNECTOR, Connector),
        "aperio_register_remediations": (PluginKind.REMEDIATION, RemediationHandler),
        "aperio_register_destinations": (PluginKind.DESTINATION, Destination),
    }


def __getattr__(name: str) -> Any:
    # `REGISTRATION_HOOKS` stays importable as before (PEP 562), with the same classes in it.
    if name == "REGISTRATION_HOOKS":
        return _registration_hooks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CatalogEntry(msgspec.Struct, frozen=True):
    """One registered implementation and the plugin that provides it."""

    plugin_id: str
    kind: PluginKind
    name: str
    implementation: Any
    description: str


class PluginRegistrations(msgspec.Struct, frozen=True):
    """What one plugin registered, by kind and name."""

    entries: Mapping[PluginKind, Mapping[str, CatalogEntry]] = msgspec.field(default_factory=dict)

    def names(self, kind: PluginKind) -> tuple[str, ...]:
        return tuple(sorted(self.entries.get(kind, {})))

    def get(self, kind: PluginKind, name: str) -> CatalogEntry | None:
        return self.entries.get(kind, {}).get(name)


class RegistrationError(Exception):
    """A plugin registered something malformed or inconsistent with its manifest."""


def _entry_name(kind: PluginKind, implementation: Any) -> tuple[str, str]:
    if kind is PluginKind.REMEDIATION:
        action = getattr(implementation, "action", None)
        name, description = getattr(action, "name", None), getattr(action, "description", "")
    else:
        name, description = getattr(implementation, "name", None), getattr(implementation, "description", "")
    if not isinstance(name, str) or not name:
        raise RegistrationError(f"registered {kind.value} {type(implementation).__name__} has no name")
    return name, str(description or "")


def collect_registrations(
    plugin_id: str,
    call_registration_hook: Callable[[str, Callable[[Any], None]], None],
    declared_kinds: tuple[PluginKind, ...],
) -> PluginRegistrations:
    """Call each registration hook of one plugin and return what it registered.

    Raises `RegistrationError` for an object of the wrong type, a nameless or
    repeated name, or a kind the manifest does not declare.
    """
    entries: dict[PluginKind, Mapping[str, CatalogEntry]] = {}
    for hook_name, (kind, expected) in _registration_hooks().items():
        collected: dict[str, CatalogEntry] = {}

        def register(
            implementation: Any,
            kind: PluginKind = kind,
            expected: type[Any] = expected,
            collected: dict[str, CatalogEntry] = collected,
        ) -> None:
            if not isinstance(implementation, expected):
                raise RegistrationError(
                    f"registered {type(implementation).__name__} as a {kind.value}, but it is not a {expected.__name__}"
                )
            name, description = _entry_name(kind, implementation)
            if name in collected:
                raise RegistrationError(f"registered {kind.value} {name!r} twice")
            collected[name] = CatalogEntry(plugin_id, kind, name, implementation, description)

        call_registration_hook(hook_name, register)
        if collected and kind not in declared_kinds:
            declared = ", ".join(k.value for k in declared_kinds)
            raise RegistrationError(
                f"registers a {kind.value} ({', '.join(sorted(collected))})"
                f" but its manifest declares kinds [{declared}]"
            )
        if collected:
            entries[kind] = MappingProxyType(collected)
    return PluginRegistrations(MappingProxyType(entries))


class Catalog:
    """The host's catalog. Names are unique per kind across all enabled plugins."""

    def __init__(self) -> None:
        self._by_plugin: dict[str, PluginRegistrations] = {}

    def conflict(self, plugin_id: str, registrations: PluginRegistrations) -> str | None:
        """Return why `registrations` cannot join the catalog, or None."""
        for kind, names in registrations.entries.items():
            for name in names:
                existing = self.lookup(kind, name)
                if existing is not None and existing.plugin_id != plugin_id:
                    return f"{kind.value} {name!r} is already registered by plugin {existing.plugin_id!r}"
        return None

    def add(self, plugin_id: str, registrations: PluginRegistrations) -> None:
        self._by_plugin[plugin_id] = registrations

    def remove(self, plugin_id: str) -> None:
        self._by_plugin.pop(plugin_id, None)

    def lookup(self, kind: PluginKind, name: str) -> CatalogEntry | None:
        for registrations in self._by_plugin.values():
            entry = registrations.get(kind, name)
            if entry is not None:
                return entry
        return None

    def of_kind(self, kind: PluginKind) -> Mapping[str, CatalogEntry]:
        merged: dict[str, CatalogEntry] = {}
        for registrations in self._by_plugin.values():
            merged.update(registrations.entries.get(kind, {}))
        return MappingProxyType(dict(sorted(merged.items())))
