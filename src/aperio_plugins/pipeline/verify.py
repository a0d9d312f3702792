"""Verify: hash every file a plugin's signature lists and check the signature against the trust store.

The checks themselves are `_verify.py`'s (and the backends' in `_keys.py`, `_sigstore.py`); this stage
runs them for one inspected plugin and audits the status. It reports; the trust mode decides in admit.
"""

from __future__ import annotations

from .._model import Inspected, SignatureStatus, Verification
from .._verify import verify_installed
from .environment import Environment

SIGNATURE_EVENTS = {
    SignatureStatus.VERIFIED: "plugin.signature.verified",
    SignatureStatus.UNSIGNED: "plugin.signature.unsigned",
    SignatureStatus.INVALID: "plugin.signature.invalid",
    SignatureStatus.SKIPPED: "plugin.signature.skipped",
}


def verify(inspected: Inspected, env: Environment) -> Verification:
    """The verify stage: return the signature status and per-file report of `inspected`. Never raises
    for a bad signature: that is a status, and admit applies the trust mode to it."""
    candidate = inspected.candidate
    verification = verify_installed(inspected, env.trust)
    env.audit.info(
        SIGNATURE_EVENTS[verification.status],
        plugin_id=candidate.plugin_id,
        distribution=candidate.describe(),
        detail=verification.detail,
        signer=verification.signer,
    )
    return verification
