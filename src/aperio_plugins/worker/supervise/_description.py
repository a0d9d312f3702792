"""What a worker says its plugin provides, checked before the host builds anything from it.

The description comes from a process that runs third-party code, so every
name is checked to be a plain identifier before it becomes a generated
function, and the action definitions are validated as envelopes.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from typing import Any

import msgspec

from aperio_hookspecs import ActionDefinition

from .._codec import EnvelopeData, EnvelopeError, envelope

_OPTION_FLAGS = ("wrapper", "hookwrapper", "optionalhook", "tryfirst", "trylast")
KINDS = ("connector", "remediation", "destination")


class DescriptionError(ValueError):
    """The worker's description is malformed; the message says where."""


class HookDescription(msgspec.Struct, frozen=True):
    hook: str
    params: tuple[str, ...]
    options: Mapping[str, Any]

    @property
    def is_wrapper(self) -> bool:
        return bool(self.options.get("wrapper") or self.options.get("hookwrapper"))


class RegistrationDescription(msgspec.Struct, frozen=True):
    kind: str
    name: str
    description: str
    provider: str = ""
    action: ActionDefinition | None = None


class Description(msgspec.Struct, frozen=True):
    plugin_id: str
    distribution: str | None
    version: str | None
    pid: int
    hooks: tuple[HookDescription, ...]
    registrations: tuple[RegistrationDescription, ...]

    def same_plugin(self, other: Description) -> bool:
        """Whether `other` (from a restarted worker) provides exactly what this one did."""
        return (self.plugin_id, self.hooks, self.registrations) == (other.plugin_id, other.hooks, other.registrations)


def is_plain_identifier(name: object) -> bool:
    """A name that can be spliced into generated source: an identifier, not a keyword, not reserved."""
    return isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_")


def _text(row: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = row.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise DescriptionError(f"{key} must be a non-empty string, got {value!r}")
    return value


def _hook(row: Any) -> HookDescription:
    if not isinstance(row, dict):
        raise DescriptionError(f"a hook must be a map, got {type(row).__name__}")
    hook = row.get("hook")
    params = row.get("params")
    options = row.get("options")
    if not is_plain_identifier(hook):
        raise DescriptionError(f"hook name {hook!r} is not a plain identifier")
    if not isinstance(params, list) or not all(is_plain_identifier(name) for name in params):
        raise DescriptionError(f"hook {hook}: parameters {params!r} are not plain identifiers")
    if len(set(params)) != len(params):
        raise DescriptionError(f"hook {hook}: repeated parameter names {params!r}")
    if not isinstance(options, dict):
        raise DescriptionError(f"hook {hook}: options must be a map")
    clean: dict[str, Any] = {flag: bool(options.get(flag, False)) for flag in _OPTION_FLAGS}
    specname = options.get("specname")
    if specname is not None and not is_plain_identifier(specname):
        raise DescriptionError(f"hook {hook}: specname {specname!r} is not a plain identifier")
    clean["specname"] = specname
    return HookDescription(str(hook), tuple(params), clean)


def _registration(row: Any) -> RegistrationDescription:
    if not isinstance(row, dict):
        raise DescriptionError(f"a registration must be a map, got {type(row).__name__}")
    kind = row.get("kind")
    if kind not in KINDS:
        raise DescriptionError(f"unknown registration kind {kind!r}")
    name = _text(row, "name")
    description = _text(row, "description", required=False)
    if kind == "remediation":
        action = row.get("action")
        if not isinstance(action, EnvelopeData):
            raise DescriptionError(f"remediation {name!r} carries no action definition")
        try:
            model = envelope(action)
        except EnvelopeError as exc:
            raise DescriptionError(f"remediation {name!r}: {exc}") from None
        if not isinstance(model, ActionDefinition) or model.name != name:
            raise DescriptionError(f"remediation {name!r}: its action definition does not match")
        return RegistrationDescription(kind, name, description, action=model)
    provider = _text(row, "provider", required=False) if kind == "connector" else ""
    return RegistrationDescription(str(kind), name, description, provider=provider)


def parse_description(payload: Any, plugin_id: str) -> Description:
    """Return the checked description; raise `DescriptionError` for anything malformed."""
    if not isinstance(payload, dict):
        raise DescriptionError(f"the description must be a map, got {type(payload).__name__}")
    if payload.get("plugin_id") != plugin_id:
        raise DescriptionError(f"describes plugin {payload.get('plugin_id')!r}, not {plugin_id!r}")
    hooks, registrations, pid = payload.get("hooks"), payload.get("registrations"), payload.get("pid")
    if not isinstance(hooks, list) or not isinstance(registrations, list) or not isinstance(pid, int):
        raise DescriptionError("hooks and registrations must be lists and pid an integer")
    parsed_hooks = tuple(_hook(row) for row in hooks)
    names = [hook.hook for hook in parsed_hooks]
    if len(set(names)) != len(names):
        raise DescriptionError(f"a hook is implemented twice: {sorted(names)}")
    distribution, version = payload.get("distribution"), payload.get("version")
    return Description(
        plugin_id=plugin_id,
        distribution=distribution if isinstance(distribution, str) else None,
        version=version if isinstance(version, str) else None,
        pid=pid,
        hooks=parsed_hooks,
        registrations=tuple(_registration(row) for row in registrations),
    )
