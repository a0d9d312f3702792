"""Verify: the signature status of a plugin's installed files.

Signature checking arrives with the trust work; until then every plugin is
`unsigned`, or `skipped` when the operator turned trust off. This stage exists
on its own already so that admission decides on its result, not on a guess.
"""

from __future__ import annotations

from ._model import Inspected, SignatureStatus, TrustMode, Verification


def verify(inspected: Inspected, trust_mode: TrustMode) -> Verification:
    """Return the verification of `inspected`'s files under `trust_mode`. Never raises."""
    if trust_mode is TrustMode.DISABLED:
        return Verification(SignatureStatus.SKIPPED, "trust mode is disabled: no checks were made")
    return Verification(
        SignatureStatus.UNSIGNED,
        f"{inspected.distribution} {inspected.version} carries no signature this host can check",
    )
