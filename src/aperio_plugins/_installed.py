"""The installed plugins as an operator names them: finding one among what discovery found, the
decisions recorded for it before it is loaded (enable flag, isolation), and checking its files.

Nothing here imports a plugin: `PluginHost` runs discovery and passes its candidates in.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ._model import Candidate, Inspected, Isolation, Verification
from ._state import OperatorDecisions
from ._verify import verify_installed
from .errors import ConfigurationError, LifecycleError, UnknownPluginError
from .pipeline.admit import split_duplicates
from .pipeline.environment import Environment
from .pipeline.inspect import inspect_candidate


def find(plugin_id: str, candidates: Sequence[Candidate]) -> Candidate:
    """Return the candidate that provides `plugin_id` (the first on the search path); raise
    `LifecycleError` if none does any more."""
    winners, _ = split_duplicates(candidates)
    for candidate in winners:
        if candidate.plugin_id == plugin_id:
            return candidate
    raise LifecycleError(f"plugin {plugin_id!r} is no longer installed on the search path", plugin_id=plugin_id)


def require_installed(plugin_id: str, candidates: Sequence[Candidate], known: Collection[str]) -> None:
    """Raise `UnknownPluginError` unless a candidate provides `plugin_id` or the host `known`s it."""
    installed = {candidate.plugin_id for candidate in candidates}
    if plugin_id not in installed and plugin_id not in known:
        listed = ", ".join(sorted(installed)) or "none"
        raise UnknownPluginError(
            f"no installed plugin with id {plugin_id!r} (installed: {listed})", plugin_id=plugin_id
        )


def check_isolation(isolation: Isolation | None) -> None:
    """Raise `ConfigurationError` unless `isolation` is one an operator may record for a plugin."""
    if isolation is Isolation.ANY:
        raise ConfigurationError("isolation must be 'process' or 'inprocess'")


def persist_isolation(decisions: OperatorDecisions, audit: Any, plugin_id: str, isolation: Isolation | None) -> None:
    """Record where `plugin_id` runs (None: the host's default) and audit it (`plugin.isolation.set`)."""
    decisions.set_isolation(plugin_id, isolation)
    audit.info("plugin.isolation.set", plugin_id=plugin_id, isolation=isolation.value if isolation else "default")


def persist_enabled(decisions: OperatorDecisions, audit: Any, plugin_id: str, enabled: bool) -> None:
    """Record the operator's enable flag for `plugin_id` and audit it as persisted."""
    decisions.set_enabled(plugin_id, enabled)
    audit.info("plugin.enabled" if enabled else "plugin.disabled", plugin_id=plugin_id, persisted=True)


def verify_from_disk(
    plugin_id: str, candidates: Sequence[Candidate], env: Environment
) -> tuple[Inspected, Verification]:
    """Inspect and verify the installed plugin `plugin_id`, importing nothing. Raises `UnknownPluginError`
    if no candidate provides it and `ManifestError` if it cannot be inspected."""
    try:
        candidate = find(plugin_id, candidates)
    except LifecycleError:
        raise UnknownPluginError(f"no installed plugin with id {plugin_id!r}", plugin_id=plugin_id) from None
    inspected = inspect_candidate(candidate, env.roots, env.cache)
    return inspected, verify_installed(inspected, env.trust)
