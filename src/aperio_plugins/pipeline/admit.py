"""Admit: policy decisions over inspected and verified plugins. Decides, and records why."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from .._compat import incompatibility
from .._model import Candidate, FailureStage, Inspected, Refusal, SignatureStatus, TrustMode, Verification
from .._policy import decide_trust, verdict


class Decision(str, enum.Enum):
    LOAD = "load"
    KEEP_DISABLED = "keep_disabled"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Admission:
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
