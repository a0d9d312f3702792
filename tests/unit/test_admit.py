"""admit: the policy decision over an inspected, verified plugin; which check refused is always named."""

from __future__ import annotations

from pathlib import Path

import pytest

from aperio_plugins._model import (
    Candidate,
    FailureStage,
    Inspected,
    Isolation,
    ManifestEntry,
    Origin,
    PluginKind,
    SignatureStatus,
    TrustMode,
    Verification,
)
from aperio_plugins.pipeline.admit import Decision, admit, duplicate_refusal, split_duplicates

VERIFIED = Verification(SignatureStatus.VERIFIED, "signed by ed25519 key abc", signer="ed25519 key abc")
UNSIGNED = Verification(SignatureStatus.UNSIGNED, "acme_box is not signed")
INVALID = Verification(SignatureStatus.INVALID, "files do not match the signed statement: acme_box/x.py modified")
SKIPPED = Verification(SignatureStatus.SKIPPED, "trust mode is disabled: no checks were made")


def candidate(plugin_id: str = "acme.box", distribution: str = "acme-box", position: int = 0) -> Candidate:
    root = Path("/nonexistent")
    return Candidate(
        plugin_id, "acme_box", distribution, "1.0.0", root, root / "x.dist-info", Origin.PLUGINS_DIR, position
    )


def inspected(requirement: str = ">=1.0,<2") -> Inspected:
    manifest = ManifestEntry("Box", (PluginKind.CONNECTOR,), (), Isolation.ANY, None, Path("/m"), "0" * 64)
    return Inspected(candidate(), manifest, requirement, "acme-box", "1.0.0", "0" * 64)


def decide(verification=VERIFIED, mode=TrustMode.STRICT, requirement=">=1.0,<2", enabled=True, collision=None):
    return admit(
        inspected(requirement),
        verification,
        trust_mode=mode,
        host_api_version="1.4.0",
        enabled_flag=enabled,
        collision=collision,
    )


def test_a_verified_compatible_enabled_plugin_is_loaded_without_warning():
    assert decide() == decide(mode=TrustMode.WARN)
    admission = decide()
    assert (admission.decision, admission.refusal, admission.warning) == (Decision.LOAD, None, None)


@pytest.mark.parametrize(
    ("verification", "mode", "decision", "refused_because"),
    [
        (UNSIGNED, TrustMode.STRICT, Decision.REFUSE, "unsigned plugin refused in strict trust mode"),
        (INVALID, TrustMode.STRICT, Decision.REFUSE, "invalid signature: files do not match"),
        (INVALID, TrustMode.WARN, Decision.LOAD, None),
        (UNSIGNED, TrustMode.WARN, Decision.LOAD, None),
        (SKIPPED, TrustMode.DISABLED, Decision.LOAD, None),
    ],
)
def test_the_trust_mode_decides_over_the_signature_status(verification, mode, decision, refused_because):
    admission = decide(verification, mode)
    assert admission.decision is decision
    if refused_because is None:
        assert admission.refusal is None
    else:
        assert admission.refusal is not None
        assert admission.refusal.stage is FailureStage.VERIFY
        assert refused_because in admission.refusal.reason


def test_warn_mode_loads_with_a_warning_but_disabled_mode_does_not_repeat_its_own():
    assert "trust mode is warn" in (decide(UNSIGNED, TrustMode.WARN).warning or "")
    assert decide(SKIPPED, TrustMode.DISABLED).warning is None


@pytest.mark.parametrize("requirement", [">=1.5,<2", ">=2,<3"])
def test_an_incompatible_api_is_refused_after_the_verdict_naming_both_versions(requirement):
    admission = decide(requirement=requirement)
    assert admission.decision is Decision.REFUSE
    assert admission.refusal is not None
    assert (admission.refusal.stage, admission.refusal.event) == (FailureStage.ADMIT, "plugin.incompatible")
    assert admission.refusal.reason.startswith("signature verified (signed by ed25519 key abc) — refused: ")
    assert "1.4.0" in admission.refusal.reason


def test_a_trust_refusal_comes_before_incompatibility():
    admission = decide(UNSIGNED, requirement=">=2,<3")
    assert admission.refusal is not None
    assert admission.refusal.stage is FailureStage.VERIFY


def test_a_collision_is_refused_as_a_collision():
    admission = decide(collision="its top-level name 'json' is in the standard library")
    assert admission.refusal is not None
    assert (admission.refusal.stage, admission.refusal.event) == (FailureStage.ADMIT, "plugin.collision")
    assert admission.refusal.reason.endswith("refused: its top-level name 'json' is in the standard library")


def test_the_operators_flag_keeps_a_plugin_disabled_and_keeps_the_warning():
    admission = decide(UNSIGNED, TrustMode.WARN, enabled=False)
    assert admission.decision is Decision.KEEP_DISABLED
    assert admission.warning is not None


def test_the_first_candidate_on_the_search_path_wins_each_id():
    first = candidate(distribution="acme-box", position=0)
    second = candidate(distribution="evil-box", position=1)
    other = candidate(plugin_id="acme.other", position=2)

    winners, duplicates = split_duplicates([second, other, first])

    assert winners == [first, other]
    assert duplicates == [(second, first)]
    refusal = duplicate_refusal(second, first)
    assert (refusal.stage, refusal.event) == (FailureStage.ADMIT, "plugin.duplicate_id")
    assert "evil-box" in refusal.reason
    assert "acme-box" in refusal.reason
