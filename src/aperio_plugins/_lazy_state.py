"""The host's lazy-activation state (`_lazy.py` has the rules): which plugins are pending, the relay
that is `host.hook`, and when a pending plugin is brought up.

`PluginHost` delegates here and keeps the records: a pending plugin has a record (state enabled,
`activation_pending`) and no activated plugin; bringing it up goes through the host's own
`bring_up`, which walks the whole pipeline and records the result as for an eager load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pluggy

from . import _lazy
from ._compat import incompatibility
from ._dev import is_development_build
from ._model import Activation, Candidate, Inspected, Isolation, PluginInfo, PluginKind
from ._plugin_records import Records, Slot
from .errors import ManifestError
from .pipeline import walk
from .pipeline.admit import Decision
from .pipeline.environment import Environment
from .pipeline.inspect import inspect_candidate
from .pipeline.load import isolation_of

BringUp = Callable[[Candidate, bool, Isolation | None], PluginInfo]
"""(candidate, enabled flag, isolation override) -> its recorded info: the host's walk of one candidate."""


def may_wait(
    inspected: Inspected,
    env: Environment,
    activation: Activation,
    enabled_flag: bool,
    isolation_override: Isolation | None,
) -> bool:
    """Whether the inspected plugin may wait for its first use (else it is brought up now): a function of
    its manifest and metadata, the settings and the operator's flags. Hashes and imports nothing.

    Whatever this cannot decide cheaply (and every refusal) is left to the eager path, which
    reports it at load as before.
    """
    if not enabled_flag or incompatibility(inspected.api_requirement, env.api_version) is not None:
        return False
    return _lazy.deferrable(
        inspected,
        activation=activation,
        isolation=isolation_of(inspected, env, isolation_override),
        trust_mode=env.trust_mode,
        untrusted_plugins_dir=env.trust.untrusted_plugins_dir is not None,
        development_build=is_development_build(inspected.candidate.metadata_dir),
    )


class LazyActivation:
    """The pending plugins of one host and `host.hook`, whose triggers activate them."""

    def __init__(
        self, activation: Activation, manager: pluggy.PluginManager, records: Records, bring_up: BringUp, audit: Any
    ) -> None:
        self.pending = _lazy.PendingActivations()
        self._activation = activation
        self._records = records
        self._audit = audit
        self._bring_up = bring_up
        self.relay = _lazy.LazyRelay(manager.hook, self.activate_declaring)

    def defer(
        self,
        candidate: Candidate,
        env: Environment,
        enabled_flag: bool,
        isolation_override: Isolation | None,
    ) -> bool:
        """Record `candidate` as pending if it may wait for its first use; False: bring it up now."""
        try:
            inspected = inspect_candidate(candidate, env.roots, env.cache)
        except ManifestError:
            return False  # refused by the eager path, which reports it at load
        if not may_wait(inspected, env, self._activation, enabled_flag, isolation_override):
            return False
        hooks = frozenset(inspected.manifest.hooks or ())
        self.pending.add(_lazy.Pending(candidate.plugin_id, candidate.position, hooks, isolation_override))
        self._records.slots[candidate.plugin_id] = Slot(_lazy.pending_info(inspected, enabled_flag), candidate)
        env.audit.info("plugin.activation.pending", plugin_id=candidate.plugin_id, hooks=sorted(hooks))
        return True

    def refresh(self) -> None:
        """Put a trigger in `relay` for each hook pending plugins declare, and the callers pluggy added."""
        self.relay.update(self.pending.hooks())

    def forget(self, plugin_id: str) -> None:
        """`plugin_id` is no longer pending (disabled, unloaded or reloaded: never activated from here)."""
        self.pending.pop(plugin_id)

    def catalog_of(self, kind: PluginKind) -> None:
        """Activate the pending plugins that may register entries of `kind` before the catalog is read."""
        if self.pending:
            self.activate_declaring(_lazy.registration_hook(kind))

    def before_run(self, plugin_id: str) -> None:
        """Activate `plugin_id` if it is pending, before `run()` looks for its record."""
        if plugin_id not in self.pending:
            return
        with self._records.lock:
            # The kinds it registers first, in search-path order, so that a name two plugins
            # register goes to the same one as at an eager load; then the plugin itself.
            kinds = self._records.slot(plugin_id).info.kinds
            self.activate_declaring(*(_lazy.registration_hook(kind) for kind in kinds))
            self.activate(plugin_id)
            self.refresh()

    def activate_declaring(self, *hooks: str) -> None:
        """Bring up every pending plugin that declares one of `hooks`, first on the search path first."""
        with self._records.lock:
            for pending in self.pending.declaring(hooks):
                self.activate(pending.plugin_id)
            self.refresh()  # a trigger left by disable() or run() heals here

    def activate(self, plugin_id: str) -> None:
        """Bring up the pending plugin `plugin_id` through the whole pipeline (no-op if not pending)."""
        pending = self.pending.pop(plugin_id)
        slot = self._records.slots.get(plugin_id)
        if pending is None or slot is None or slot.candidate is None:
            return
        self._audit.info("plugin.activation.started", plugin_id=plugin_id)
        self._bring_up(slot.candidate, slot.info.enabled_flag, pending.isolation_override)

    def verify_pending(self, env: Environment) -> None:
        """Inspect, verify and admit every pending plugin without importing it (`env`: the host's,
        with the plugins directory scanned).

        A pending plugin that would be refused is refused now (state `failed`, as at activation);
        the others stay pending with the signature status verification found. They are verified
        again when activated: this only answers "what would happen", for `aperio plugin list`.
        """
        with self._records.lock:
            for plugin_id, slot in list(self._records.slots.items()):
                if plugin_id not in self.pending or slot.candidate is None:
                    continue
                evaluated = walk.evaluate(slot.candidate, env, slot.info.enabled_flag)
                if evaluated.decision is Decision.REFUSE or evaluated.verification is None:
                    self.pending.pop(plugin_id)
                    slot.info = evaluated.info
                    continue
                verification = evaluated.verification
                slot.info = msgspec.structs.replace(
                    slot.info,
                    signature_status=verification.status,
                    signature_detail=verification.detail,
                    signer=verification.signer,
                )
