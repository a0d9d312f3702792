"""Lazy activation: plugins that declare their hooks are verified and imported on first use.

A plugin whose manifest lists the hooks it implements (`hooks = [...]`) need not be
imported at start: the host records it as pending and activates it (the whole pipeline:
inspect, verify, admit, import, register) the first time anyone looks up one of those
hooks on `host.hook`, reads the catalog of a kind it registers, or runs it. The lookup
happens before pluggy picks the implementations of a call, so the first call already
reaches the plugin with its own marker options (wrapper, tryfirst, trylast), exactly as
an eagerly loaded plugin. This is VS Code's activation events, with hooks as the events.

What is deferred is only when the pipeline runs, never what it checks: no code of a
pending plugin runs before it is verified and admitted, and a refusal at activation is
recorded as at load (state `failed`, the stage and the reason).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pluggy

from ._catalog import REGISTRATION_HOOKS
from ._model import Activation, Inspected, Isolation, Origin, PluginInfo, PluginKind, PluginState, TrustMode
from ._receipt import RECEIPT_FILE_NAME
from ._statement import SIGNATURE_FILE_NAME

PENDING_DETAIL = "not checked yet: verified when the plugin is first used (lazy activation)"


@dataclass(frozen=True)
class Pending:
    """A plugin admitted for lazy activation, with what its activation needs."""

    plugin_id: str
    position: int
    hooks: frozenset[str]
    isolation_override: Isolation | None


class PendingActivations:
    """The host's pending plugins by id; found by the hooks they declare, in search-path order."""

    def __init__(self) -> None:
        self._pending: dict[str, Pending] = {}

    def __contains__(self, plugin_id: object) -> bool:
        return plugin_id in self._pending

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, pending: Pending) -> None:
        self._pending[pending.plugin_id] = pending

    def pop(self, plugin_id: str) -> Pending | None:
        return self._pending.pop(plugin_id, None)

    def declaring(self, hooks: Iterable[str]) -> list[Pending]:
        """Return the pending plugins that declare any of `hooks`, first on the search path first."""
        wanted = frozenset(hooks)
        found = [pending for pending in self._pending.values() if pending.hooks & wanted]
        return sorted(found, key=lambda pending: pending.position)


def registration_hook(kind: PluginKind) -> str:
    """Return the registration hook through which plugins add entries of `kind` to the catalog."""
    return next(hook for hook, (hook_kind, _) in REGISTRATION_HOOKS.items() if hook_kind is kind)


class LazyRelay:
    """`host.hook`: pluggy's relay, activating the pending plugins that declare a hook before handing it out.

    A hook looked up once with nothing pending for it is kept in this object's `__dict__`, so
    later lookups cost what they cost on pluggy's own relay; `forget` drops the hooks of a
    newly pending plugin so that their next lookup activates it. A caller that keeps a hook
    caller itself (`caller = host.hook.name`) across a `load()` keeps calling without the
    plugins that load made pending: keep `host.hook` instead.
    """

    _aperio_relay: pluggy.HookRelay
    _aperio_activate: Callable[[str], None]

    def __init__(self, relay: pluggy.HookRelay, activate: Callable[[str], None]) -> None:
        self.__dict__["_aperio_relay"] = relay
        self.__dict__["_aperio_activate"] = activate

    def __getattr__(self, name: str) -> pluggy.HookCaller:
        if name.startswith("__"):
            raise AttributeError(name)
        self._aperio_activate(name)
        caller: pluggy.HookCaller = getattr(self._aperio_relay, name)
        self.__dict__[name] = caller
        return caller

    def __dir__(self) -> list[str]:
        return dir(self._aperio_relay)

    def forget(self, hooks: Iterable[str]) -> None:
        for name in hooks:
            self.__dict__.pop(name, None)


def _signed_or_received(metadata_dir: str) -> bool:
    return any(os.path.isfile(os.path.join(metadata_dir, name)) for name in (SIGNATURE_FILE_NAME, RECEIPT_FILE_NAME))


def deferrable(
    inspected: Inspected,
    *,
    activation: Activation,
    isolation: Isolation,
    trust_mode: TrustMode,
    untrusted_plugins_dir: bool,
    development_build: bool,
) -> bool:
    """Whether `inspected` may wait for its first use: it declares its hooks, runs in process, and
    nothing visible without hashing a file says it would be refused.

    A plugin that is bound to be refused (unsigned in strict, a plugins directory others can
    write to, a development build) is brought up at load, so that its refusal is reported
    at start as before; so is a plugin that runs in a worker. The API compatibility check
    is cheap and is made at load for pending plugins too (see the host).
    """
    if activation is not Activation.LAZY or inspected.manifest.hooks is None:
        return False
    if isolation is not Isolation.INPROCESS or development_build:
        return False
    if trust_mode is not TrustMode.STRICT:
        return True
    from_plugins_dir = inspected.candidate.origin is Origin.PLUGINS_DIR
    if untrusted_plugins_dir and from_plugins_dir:
        return False
    return _signed_or_received(str(inspected.candidate.metadata_dir))


def pending_info(inspected: Inspected, enabled_flag: bool) -> PluginInfo:
    """Return the `PluginInfo` of a pending plugin: enabled, signature not checked yet."""
    candidate = inspected.candidate
    manifest = inspected.manifest
    return PluginInfo(
        id=candidate.plugin_id,
        state=PluginState.ENABLED,
        signature_status=None,
        signature_detail=PENDING_DETAIL,
        distribution=inspected.distribution,
        version=inspected.version,
        location=str(candidate.root),
        origin=candidate.origin,
        entry_point=candidate.entry_point,
        api_requirement=inspected.api_requirement,
        summary=manifest.summary,
        kinds=manifest.kinds,
        credential_scopes=manifest.credential_scopes,
        isolation=Isolation.INPROCESS,
        enabled_flag=enabled_flag,
        activation_pending=True,
    )


def declaration_problem(declared: tuple[str, ...] | None, implemented: Iterable[str]) -> str | None:
    """Return how a manifest's hooks declaration differs from the hooks the module implements, or None.

    Both directions matter: an undeclared hook would never activate the plugin, and a declared
    hook the module lacks would activate it for nothing (and means the manifest is stale).
    """
    if declared is None:
        return None
    actual = frozenset(implemented)
    missing = sorted(actual - set(declared))
    extra = sorted(set(declared) - actual)
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"implements {', '.join(missing)}, which its manifest's hooks do not list")
    if extra:
        parts.append(f"its manifest's hooks list {', '.join(extra)}, which it does not implement")
    return "hooks declaration does not match the module: " + "; ".join(parts)
