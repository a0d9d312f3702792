"""The one trust-mode decision that loading and installing share: every status under every mode."""

from __future__ import annotations

import pytest
from plugin_builders import connector_wheel, imported_ids

from aperio_plugins import PluginState
from aperio_plugins._model import SignatureStatus, TrustMode, Verification
from aperio_plugins._policy import decide_trust, verdict
from aperio_plugins.errors import ArtifactRejectedError
from aperio_plugins.pipeline.admit import Decision, admit

UNSIGNED = (
    "unsigned plugin refused in strict trust mode ({}); set APERIO_PLUGIN_TRUST_MODE=warn to accept unsigned plugins"
)


@pytest.mark.parametrize(
    ("status", "mode", "refusal", "warning"),
    [
        (SignatureStatus.VERIFIED, TrustMode.STRICT, None, None),
        (SignatureStatus.VERIFIED, TrustMode.WARN, None, None),
        (SignatureStatus.INVALID, TrustMode.STRICT, "invalid signature: why", None),
        (
            SignatureStatus.INVALID,
            TrustMode.WARN,
            None,
            "accepted with an invalid signature because trust mode is warn: why",
        ),
        (SignatureStatus.UNSIGNED, TrustMode.STRICT, UNSIGNED.format("why"), None),
        (SignatureStatus.UNSIGNED, TrustMode.WARN, None, "accepted unsigned because trust mode is warn: why"),
        (
            SignatureStatus.SKIPPED,
            TrustMode.DISABLED,
            None,
            "accepted without any signature check because trust mode is disabled",
        ),
        # A skipped check outside `disabled` is a fault upstream: strict refuses it, warn says so.
        (
            SignatureStatus.SKIPPED,
            TrustMode.STRICT,
            "its signature was not checked (why), which only trust mode disabled allows",
            None,
        ),
        (
            SignatureStatus.SKIPPED,
            TrustMode.WARN,
            None,
            "accepted although its signature was not checked (why), which only trust mode disabled allows",
        ),
        *[
            (status, TrustMode.DISABLED, None, "accepted without any signature check because trust mode is disabled")
            for status in (SignatureStatus.INVALID, SignatureStatus.UNSIGNED)
        ],
        (SignatureStatus.VERIFIED, TrustMode.DISABLED, None, None),
    ],
)
def test_every_status_under_every_mode(status, mode, refusal, warning):
    decision = decide_trust(Verification(status, "why"), mode)

    assert (decision.refusal, decision.warning) == (refusal, warning)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (SignatureStatus.VERIFIED, "signature verified (signed by x)"),
        (SignatureStatus.INVALID, "signature invalid (signed by x)"),
        (SignatureStatus.UNSIGNED, "unsigned (signed by x)"),
        (SignatureStatus.SKIPPED, "signature not checked (signed by x)"),
    ],
)
def test_the_verdict_names_the_status(status, expected):
    assert verdict(Verification(status, "signed by x")) == expected


def test_load_says_the_verdict_before_an_incompatibility(tmp_path):
    from aperio_plugins._model import Candidate, Inspected, Isolation, ManifestEntry, Origin

    candidate = Candidate("acme.x", "acme_x", "acme-x", "1.0.0", tmp_path, tmp_path, Origin.PLUGINS_DIR, 0)
    manifest = ManifestEntry("x", (), (), Isolation.ANY, None, tmp_path, "0" * 64)
    inspected = Inspected(candidate, manifest, ">=2,<3", "acme-x", "1.0.0", "0" * 64)
    verified = Verification(SignatureStatus.VERIFIED, "signed by ed25519 key k")

    admission = admit(inspected, verified, trust_mode=TrustMode.STRICT, host_api_version="1.0.0", enabled_flag=True)

    assert admission.decision is Decision.REFUSE
    assert admission.refusal is not None
    assert admission.refusal.reason.startswith("signature verified (signed by ed25519 key k) — refused: built for")


def test_install_and_load_refuse_an_unsigned_plugin_in_the_same_words(
    wheel_dir, make_host, install, plugins_dir, marker, tmp_path
):
    from aperio_plugins import HostSettings
    from aperio_plugins._state import SQLiteStateStore
    from aperio_plugins._trust import load_trust_store
    from aperio_plugins.registry._client import RegistryClient

    wheel = connector_wheel(wheel_dir, "acme.x", distribution="acme-x", marker=marker)
    settings = HostSettings(
        plugins_dir=tmp_path / "other-plugins",
        state_dir=tmp_path / "install-state",
        plugin_trusted_keys_dir=tmp_path / "keys",
        plugin_trusted_identities=tmp_path / "trusted-identities.toml",
    )
    client = RegistryClient(settings, SQLiteStateStore.in_directory(settings.state_dir), load_trust_store(settings))
    with client, pytest.raises(ArtifactRejectedError) as refused:
        client.install(str(wheel))
    install(wheel)
    host = make_host("strict")

    info = host.load().plugins[0]

    assert info.state is PluginState.FAILED
    assert refused.value.message == f"acme-x 1.0.0: {UNSIGNED.format('acme_x-1.0.0-py3-none-any.whl is not signed')}"
    assert info.error == UNSIGNED.format("acme-x 1.0.0 is not signed")
    assert imported_ids(marker) == []
