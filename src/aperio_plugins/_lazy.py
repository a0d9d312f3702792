"""Lazy activation: plugins that declare their hooks are verified and imported on first use.

A plugin whose manifest lists the hooks it implements (`hooks = [...]`) need not be
imported at start: the host records it as pending and activates it (the whole pipeline:
inspect, verify, admit, import, register) the first time anyone calls one of those hooks
through `host.hook` (or asks it for its implementations), reads the catalog of a kind it
registers, or runs it. Activation happens before pluggy picks the implementations of a
call, so the first call already
reaches the plugin with its own marker options (wrapper, tryfirst, trylast), exactly as
an eagerly loaded plugin. This is VS Code's activation events, with hooks as the events.

What is deferred is only when the pipeline runs, never what it checks: no code of a
pending plugin runs before it is verified and admitted, and a refusal at activation is
recorded as at load (state `failed`, the stage and the reason).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec
import pluggy

from ._model import Activation, Inspected, Isolation, Origin, PluginInfo, PluginKind, PluginState, TrustMode
from ._receipt import RECEIPT_FILE_NAME
from ._statement import SIGNATURE_FILE_NAME

PENDING_DETAIL = "not checked yet: verified when the plugin is first used (lazy activation)"


class Pending(msgspec.Struct, frozen=True):
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

    def hooks(self) -> frozenset[str]:
        """Every hook some pending plugin declares."""
        return frozenset(hook for pending in self._pending.values() for hook in pending.hooks)

    def declaring(self, hooks: Iterable[str]) -> list[Pending]:
        """Return the pending plugins that declare any of `hooks`, first on the search path first."""
        wanted = frozenset(hooks)
        found = [pending for pending in self._pending.values() if pending.hooks & wanted]
        return sorted(found, key=lambda pending: pending.position)


def registration_hook(kind: PluginKind) -> str:
    """Return the registration hook through which plugins add entries of `kind` to the catalog."""
    from ._catalog import REGISTRATION_HOOKS  # names the SDK's extension classes: not for a listing

    return next(hook for hook, (hook_kind, _) in REGISTRATION_HOOKS.items() if hook_kind is kind)


class _Trigger:
    """Stands in `LazyRelay` for a hook that pending plugins declare: using it activates them."""

    def __init__(self, name: str, relay: pluggy.HookRelay, activate: Callable[[str], None]) -> None:
        self._name, self._relay, self._activate = name, relay, activate

    def _caller(self) -> pluggy.HookCaller:
        self._activate(self._name)
        caller: pluggy.HookCaller = getattr(self._relay, self._name)
        return caller

    def __call__(self, **kwargs: Any) -> Any:
        return self._caller()(**kwargs)

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return getattr(self._caller(), attribute)  # call_historic, get_hookimpls, ...


class LazyRelay:
    """`host.hook`: pluggy's hook callers, with a trigger in place of each hook pending plugins declare.

    A trigger activates the pending plugins that declare its hook (first on the search path
    first) before pluggy picks the implementations of the call, so the first call already
    reaches them with their own marker options. The relay is a plain object whose attributes
    are the callers themselves (no `__getattr__`, which would cost every lookup about 70 ns);
    the host calls `update` whenever what is pending or registered changes. A caller kept
    across a `load()` (`caller = host.hook.name`) does not see plugins that load made pending:
    keep `host.hook` instead.
    """

    def __init__(self, relay: pluggy.HookRelay, activate: Callable[[str], None]) -> None:
        self._aperio_relay = relay
        self._aperio_activate = activate
        self.update(frozenset())

    def update(self, pending_hooks: frozenset[str]) -> None:
        """Make every hook caller of the relay an attribute, triggers for the hooks in `pending_hooks`."""
        relay, activate = self._aperio_relay, self._aperio_activate
        for name, caller in vars(relay).items():
            self.__dict__[name] = _Trigger(name, relay, activate) if name in pending_hooks else caller

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> pluggy.HookCaller: ...


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
    is cheap and is made at load for pending plugins too (`_lazy_state.may_wait`).
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
    return inspected.info(
        state=PluginState.ENABLED,
        enabled_flag=enabled_flag,
        isolation=Isolation.INPROCESS,
        signature_status=None,
        signature_detail=PENDING_DETAIL,
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
