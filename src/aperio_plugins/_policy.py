"""The trust-mode decision: the one place where strict, warn and disabled turn a signature status into
accept, accept with a warning, or refuse. Loading (`pipeline.admit`) and installing (`registry/_artifact`) both
call it, so an install refuses exactly what a load would, in the same words. Verification only reports.
"""

from __future__ import annotations

import msgspec

from ._model import SignatureStatus, TrustMode, Verification


class TrustDecision(msgspec.Struct, frozen=True):
    """`refusal` is why the plugin is refused (None: accepted); `warning` is said when it is accepted anyway."""

    refusal: str | None = None
    warning: str | None = None


def decide_trust(verification: Verification, mode: TrustMode) -> TrustDecision:
    """Return what the trust mode makes of `verification`. Pure: no I/O, never raises."""
    status, detail = verification.status, verification.detail
    if status is SignatureStatus.VERIFIED:
        return TrustDecision()
    if mode is TrustMode.DISABLED:
        return TrustDecision(warning="accepted without any signature check because trust mode is disabled")
    if status is SignatureStatus.SKIPPED:
        # Only the disabled mode skips checks; a skipped verdict under any other mode is a fault, so fail closed.
        reason = f"its signature was not checked ({detail}), which only trust mode disabled allows"
        if mode is TrustMode.STRICT:
            return TrustDecision(refusal=reason)
        return TrustDecision(warning=f"accepted although {reason}")
    if status is SignatureStatus.INVALID:
        if mode is TrustMode.STRICT:
            return TrustDecision(refusal=f"invalid signature: {detail}")
        return TrustDecision(warning=f"accepted with an invalid signature because trust mode is warn: {detail}")
    if mode is TrustMode.STRICT:
        return TrustDecision(
            refusal=f"unsigned plugin refused in strict trust mode ({detail});"
            " set APERIO_PLUGIN_TRUST_MODE=warn to accept unsigned plugins"
        )
    return TrustDecision(warning=f"accepted unsigned because trust mode is warn: {detail}")


def verdict(verification: Verification) -> str:
    """Return the signature verdict as it leads every later refusal: 'signature verified (signed by …)'."""
    status = verification.status
    if status is SignatureStatus.VERIFIED:
        return f"signature verified ({verification.detail})"
    if status is SignatureStatus.INVALID:
        return f"signature invalid ({verification.detail})"
    if status is SignatureStatus.UNSIGNED:
        return f"unsigned ({verification.detail})"
    return f"signature not checked ({verification.detail})"


def verdict_fields(verification: Verification) -> dict[str, str | None]:
    """Return the verdict as the fields `--json` output and audit events carry."""
    return {
        "status": verification.status.value,
        "detail": verification.detail,
        "signer": verification.signer,
        "verdict": verdict(verification),
    }
