"""Admit: policy decisions over inspected and verified plugins. Decides, and records why."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import msgspec

from .._compat import incompatibility
from .._dev import is_development_build
from .._model import Candidate, FailureStage, Inspected, Origin, Refusal, SignatureStatus, TrustMode, Verification
from .._ownership import collision
from .._policy import decide_trust, verdict
from .environment import Environment


class Decision(str, enum.Enum):
    LOAD = "load"
    KEEP_DISABLED = "keep_disabled"
    REFUSE = "refuse"


class Admission(msgspec.Struct, frozen=True):
    decision: Decision
    refusal: Refusal | None = None
    warning: str | None = None


def split_duplicates(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[tuple[Candidate, Candidate]]]:
    """Return (winners, [(duplicate, winner)]): the first candidate on the search path wins each id."""
    winners: dict[str, Candidate] = {}
    duplicates: list[tuple[Candidate, Candidate]] = []
    for candidate in sorted(candidates, key=lambda c: c.position):
        winner = winners.get(candidate.plugin_id)
        if winner is None:
            winners[candidate.plugin_id] = candidate
        else:
            duplicates.append((candidate, winner))
    return list(winners.values()), duplicates


def duplicate_refusal(duplicate: Candidate, winner: Candidate) -> Refusal:
    return Refusal(
        FailureStage.ADMIT,
        f"duplicate plugin id {duplicate.plugin_id!r}: {duplicate.describe()} is shadowed by"
        f" {winner.describe()}, which comes first on the search path",
        event="plugin.duplicate_id",
    )


def admit(
    inspected: Inspected,
    verification: Verification,
    *,
    trust_mode: TrustMode,
    host_api_version: str,
    enabled_flag: bool,
    collision: str | None = None,
    development_build: bool = False,
    development: bool = False,
) -> Admission:
    """Decide whether `inspected` may be imported: a development build (`aperio plugin dev`) only on a
    `development` host, then trust, then compatibility, then top-level name collisions (`collision`:
    why its names are taken, from `_ownership.collision`), then the operator's flag.

    The signature verdict leads any later refusal, so that it is never hidden behind another reason.
    """
    if development_build and not development:
        refused = (
            f"{verdict(verification)} — refused: a development build (installed by aperio plugin dev) loads only"
            " with APERIO_ENVIRONMENT=development; install a signed release instead"
        )
        return Admission(Decision.REFUSE, Refusal(FailureStage.ADMIT, refused, event="plugin.development_build"))
    trust = decide_trust(verification, trust_mode)
    if trust.refusal is not None:
        return Admission(Decision.REFUSE, Refusal(FailureStage.VERIFY, trust.refusal))
    reason = incompatibility(inspected.api_requirement, host_api_version)
    if reason is not None:
        reason = f"{verdict(verification)} — refused: {reason}"
        return Admission(Decision.REFUSE, Refusal(FailureStage.ADMIT, reason, event="plugin.incompatible"))
    # In `disabled` the host already warns once, loudly, for the whole trust store; not again per plugin.
    warning = trust.warning if verification.status is not SignatureStatus.SKIPPED else None
    if collision is not None:
        return Admission(
            Decision.REFUSE,
            Refusal(FailureStage.ADMIT, f"{verdict(verification)} — refused: {collision}", event="plugin.collision"),
        )
    if not enabled_flag:
        return Admission(Decision.KEEP_DISABLED, warning=warning)
    return Admission(Decision.LOAD, warning=warning)


def admit_plugin(inspected: Inspected, verification: Verification, env: Environment, enabled_flag: bool) -> Admission:
    """The admit stage: `admit` with what `env` knows (trust mode, API version, the names others hold).

    Audits the trust mode's warning, if any; the refusal is returned, not raised.
    """
    candidate = inspected.candidate
    admission = admit(
        inspected,
        verification,
        trust_mode=env.trust_mode,
        host_api_version=env.api_version,
        enabled_flag=enabled_flag,
        collision=name_collision(inspected, verification, env),
        development_build=is_development_build(candidate.metadata_dir),
        development=env.development,
    )
    if admission.warning is not None:
        env.audit.warning("plugin.trust.warning", plugin_id=candidate.plugin_id, reason=admission.warning)
    return admission


def name_collision(inspected: Inspected, verification: Verification, env: Environment) -> str | None:
    """Return why a top-level name of the plugin is taken (the standard library, the host's environment,
    another distribution in the plugins directory), or None."""
    candidate = inspected.candidate
    names = set(verification.packages) | {candidate.top_level_package}
    if candidate.origin is not Origin.PLUGINS_DIR:
        # Installed in the host's environment by the operator: only the standard library is checked.
        return collision(names, inspected.distribution)
    owned = env.layout.distribution_at(candidate.metadata_dir)
    if owned is not None:
        names |= owned.import_names
    return collision(names, inspected.distribution, host=env.host_modules, layout=env.layout)
