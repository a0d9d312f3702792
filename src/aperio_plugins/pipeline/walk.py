"""One candidate through every stage: inspect, verify, admit, then load and register.

Both `PluginHost` and the worker process walk a candidate with these functions; each
returns data (a `PluginInfo` with the refusal, or what was activated) and changes no
state of theirs: the caller records the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pluggy

from .._catalog import Catalog, PluginRegistrations
from .._dev import is_development_build
from .._model import (
    Candidate,
    FailureStage,
    Inspected,
    Isolation,
    PluginInfo,
    PluginKind,
    PluginState,
    Refusal,
    SignatureStatus,
    Verification,
)
from .admit import Decision, admit_plugin, duplicate_refusal
from .environment import Environment, Refused
from .inspect import inspect
from .load import load, restore_on_failure
from .verify import verify

if TYPE_CHECKING:
    from .register import Activated


class Evaluated(msgspec.Struct, frozen=True):
    """One candidate after inspect, verify and admit."""

    info: PluginInfo
    inspected: Inspected | None
    decision: Decision
    verification: Verification | None = None


class Walked(msgspec.Struct, frozen=True):
    """One candidate after the whole walk: its info (state enabled, disabled or failed) and, when it
    came up, what was activated."""

    info: PluginInfo
    activated: Activated | None = None


def evaluate(candidate: Candidate, env: Environment, enabled_flag: bool) -> Evaluated:
    """Run inspect, verify and admit for one candidate. Imports nothing; a refusal is audited and returned."""
    env.audit.info(
        "plugin.discovered",
        plugin_id=candidate.plugin_id,
        distribution=candidate.describe(),
        origin=candidate.origin.value,
    )
    try:
        inspected = inspect(candidate, env)
    except Refused as refused:
        info = failed_info(candidate, refused.refusal, env, enabled_flag=enabled_flag)
        return Evaluated(info, None, Decision.REFUSE)
    verification = verify(inspected, env)
    admission = admit_plugin(inspected, verification, env, enabled_flag)
    info = inspected_info(inspected, verification, enabled_flag)
    if admission.refusal is not None:
        return Evaluated(refuse(info, admission.refusal, env), inspected, Decision.REFUSE, verification)
    return Evaluated(info, inspected, admission.decision, verification)


def activate(
    evaluated: Evaluated,
    env: Environment,
    isolation: Isolation | None,
    manager: pluggy.PluginManager,
    catalog: Catalog,
) -> Activated:
    """Load and register an admitted plugin (`isolation`: the operator's override).

    Raises `Refused`; the manager is untouched and nothing stays loaded on failure.
    """
    # Guards, breakers and registration are for activating: a listing, and a start whose plugins
    # all wait for their first call, never import them.
    from .register import register_plugin

    inspected = evaluated.inspected
    assert inspected is not None
    return register_plugin(load(inspected, evaluated.verification, env, isolation), env, manager, catalog)


def bring_up(
    candidate: Candidate,
    env: Environment,
    enabled_flag: bool,
    isolation: Isolation | None,
    manager: pluggy.PluginManager,
    catalog: Catalog,
) -> Walked:
    """Walk one candidate through every stage; an admitted, enabled plugin ends registered in `manager`
    (`catalog` is only read). A disabled one is not imported."""
    evaluated = evaluate(candidate, env, enabled_flag)
    if evaluated.decision is Decision.REFUSE or evaluated.inspected is None:
        return Walked(evaluated.info)
    if evaluated.decision is Decision.KEEP_DISABLED:
        env.audit.info("plugin.disabled", plugin_id=candidate.plugin_id, reason="operator flag; not imported")
        return Walked(msgspec.structs.replace(evaluated.info, state=PluginState.DISABLED))
    try:
        with restore_on_failure(candidate):
            activated = activate(evaluated, env, isolation, manager, catalog)
    except Refused as refused:
        return Walked(refuse(tampered_if_verify(evaluated.info, refused.refusal), refused.refusal, env))
    info = msgspec.structs.replace(evaluated.info, state=PluginState.ENABLED, isolation=activated.loaded.isolation)
    return Walked(with_registrations(info, activated.registrations), activated)


def refuse(info: PluginInfo, refusal: Refusal, env: Environment) -> PluginInfo:
    """Audit `refusal` and return `info` failed with it."""
    fields = {"plugin_id": info.id, "distribution": info.distribution, "stage": refusal.stage.value}
    if refusal.event != "plugin.load.failed":
        env.audit.warning(refusal.event, reason=refusal.reason, **fields)
    env.audit.warning("plugin.load.failed", reason=refusal.reason, **fields)
    return msgspec.structs.replace(info, state=PluginState.FAILED, error=refusal.reason, failure_stage=refusal.stage)


def failed_info(candidate: Candidate, refusal: Refusal, env: Environment, *, enabled_flag: bool = True) -> PluginInfo:
    """Audit `refusal` of a candidate that was never inspected and return its failed info."""
    info = PluginInfo(
        id=candidate.plugin_id,
        state=PluginState.DISCOVERED,
        distribution=candidate.distribution,
        version=candidate.version,
        location=str(candidate.root),
        origin=candidate.origin,
        entry_point=candidate.entry_point,
        enabled_flag=enabled_flag,
    )
    return refuse(info, refusal, env)


def inspected_info(inspected: Inspected, verification: Verification, enabled_flag: bool) -> PluginInfo:
    """The info of an inspected and verified plugin, still `discovered`."""
    return inspected.info(
        state=PluginState.DISCOVERED,
        enabled_flag=enabled_flag,
        isolation=inspected.manifest.isolation,
        signature_status=verification.status,
        signature_detail=verification.detail,
        signer=verification.signer,
        development_build=is_development_build(inspected.candidate.metadata_dir),
    )


def tampered_if_verify(info: PluginInfo, refusal: Refusal) -> PluginInfo:
    """`info` with signature status invalid when `refusal` comes from a file changed after verification."""
    # Caught at import: the status is invalid whatever verification said a moment earlier.
    if refusal.stage is FailureStage.VERIFY:
        return msgspec.structs.replace(info, signature_status=SignatureStatus.INVALID)
    return info


def with_registrations(info: PluginInfo, registrations: PluginRegistrations) -> PluginInfo:
    """`info` naming the connectors, remediations and destinations in `registrations`."""
    return msgspec.structs.replace(
        info,
        connectors=registrations.names(PluginKind.CONNECTOR),
        remediations=registrations.names(PluginKind.REMEDIATION),
        destinations=registrations.names(PluginKind.DESTINATION),
    )


def reactivate(
    candidate: Candidate,
    env: Environment,
    enabled_flag: bool,
    isolation: Isolation | None,
    manager: pluggy.PluginManager,
    catalog: Catalog,
    old: Activated,
    registered: bool,
) -> tuple[Evaluated, Activated]:
    """Walk a loaded plugin's candidate again to replace it in place (reload). When `old` is
    `registered` (enabled), it leaves `manager` while the new one registers, and comes back if that
    fails. The new one ends registered; the caller releases `old`, or unregisters the new one to keep
    it disabled. Raises `Refused`; `old` is as it was then."""
    evaluated = evaluate(candidate, env, enabled_flag)
    if evaluated.inspected is None or evaluated.decision is Decision.REFUSE:
        refusal = Refusal(evaluated.info.failure_stage or FailureStage.ADMIT, evaluated.info.error or "refused")
        raise Refused(refusal)
    plugin_id = candidate.plugin_id
    if registered:
        manager.unregister(name=plugin_id)
    try:
        with restore_on_failure(candidate):
            return evaluated, activate(evaluated, env, isolation, manager, catalog)
    except Refused:
        if registered:
            manager.register(old.prepared.registered, name=plugin_id)
        raise


def shadowed(duplicate: Candidate, winner: Candidate, env: Environment) -> PluginInfo:
    """The failed info of a candidate whose id `winner` took first on the search path, audited."""
    refusal = duplicate_refusal(duplicate, winner)
    env.audit.warning(
        refusal.event, plugin_id=duplicate.plugin_id, distribution=duplicate.describe(), winner=winner.describe()
    )
    return failed_info(duplicate, refusal, env)
