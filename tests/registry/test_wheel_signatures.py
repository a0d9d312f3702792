"""Signatures over the wheel file, as publishers make them: the real rfc8785 release and its release
bundle, Sigstore message-signature bundles from the private test instance beside a wheel, in the
index and in `aperio plugin install --json`; the signature verdict leads every refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_builders import connector_wheel, imported_ids
from sigstore_helpers import GITHUB_ISSUER, RELEASE_IDENTITY, preload_sigstore, write_identities
from testdata import PRODUCTION_ROOT, RFC8785_BUNDLE, RFC8785_IDENTITY, RFC8785_WHEEL
from tree_snapshot import snapshot

from aperio_plugins import PluginHost, PluginState, SignatureStatus
from aperio_plugins.errors import ArtifactRejectedError, InstallError
from aperio_plugins.testing import sign_wheel_file_with_sigstore

APERIO = str(Path(sys.executable).with_name("aperio"))
RFC8785_TAG = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.3"


@pytest.fixture(scope="module", autouse=True)
def _sigstore_imported() -> None:
    preload_sigstore()


@pytest.fixture
def rfc8785(tmp_path: Path) -> Path:
    """The real rfc8785 0.1.2 wheel with its real release bundle beside it, as `sigstore sign` leaves them."""
    folder = tmp_path / "release"
    folder.mkdir()
    wheel = folder / RFC8785_WHEEL.name
    shutil.copy(RFC8785_WHEEL, wheel)
    shutil.copy(RFC8785_BUNDLE, folder / f"{wheel.name}.sigstore.json")
    return wheel


def test_the_real_release_signature_passes_and_the_install_is_refused_as_not_a_plugin(
    rfc8785, make_client, make_settings, plugins_dir, audit
):
    write_identities(make_settings().plugin_trusted_identities, RFC8785_IDENTITY, GITHUB_ISSUER, PRODUCTION_ROOT)
    client = make_client()
    before = snapshot(plugins_dir)

    with pytest.raises(ArtifactRejectedError) as refused:
        client.install(str(rfc8785))

    expected = (
        f"rfc8785 0.1.2: signature verified (signed by sigstore identity {RFC8785_IDENTITY} (issuer {GITHUB_ISSUER}))"
        " — refused: has no entry point in the 'aperio.plugins' group: it is not a plugin"
    )
    assert refused.value.message == expected
    assert refused.value.signature is not None
    assert refused.value.signature["status"] == "verified"
    event = audit.fields_of("plugin.install.refused")[-1]
    assert event["signature_status"] == "verified"
    assert event["signature"].startswith(f"signature verified (signed by sigstore identity {RFC8785_IDENTITY}")
    assert snapshot(plugins_dir) == before
    assert not (make_settings().state_dir / "host-key.pem").exists()


@pytest.mark.parametrize(
    ("identity", "issuer", "reason"),
    [
        pytest.param(
            "https://github.com/acme/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
            GITHUB_ISSUER,
            f"untrusted signer: identity {RFC8785_IDENTITY} (issuer {GITHUB_ISSUER}) is not a trusted identity",
            id="wrong_identity",
        ),
        pytest.param(
            RFC8785_TAG,
            GITHUB_ISSUER,
            f"untrusted signer: identity {RFC8785_IDENTITY} (issuer {GITHUB_ISSUER}) is not a trusted identity",
            id="wrong_tag",
        ),
        pytest.param(
            RFC8785_IDENTITY,
            "https://gitlab.com",
            f"wrong OIDC issuer: identity {RFC8785_IDENTITY} was issued by {GITHUB_ISSUER}",
            id="wrong_issuer",
        ),
    ],
)
def test_the_real_release_is_refused_at_the_signature_for_another_identity(
    rfc8785, make_client, make_settings, plugins_dir, identity, issuer, reason
):
    write_identities(make_settings().plugin_trusted_identities, identity, issuer, PRODUCTION_ROOT)
    before = snapshot(plugins_dir)

    with pytest.raises(ArtifactRejectedError) as refused:
        make_client().install(str(rfc8785))

    message = refused.value.message
    assert message.startswith("rfc8785 0.1.2: invalid signature: rfc8785-0.1.2-py3-none-any.whl.sigstore.json:")
    assert reason in message
    assert "not a plugin" not in message  # refused at the signature, before anything else was looked at
    assert refused.value.signature is not None
    assert refused.value.signature["status"] == "invalid"
    assert snapshot(plugins_dir) == before


def test_a_plugin_signed_only_over_its_wheel_file_installs_with_a_receipt_and_loads_verified(
    instance, make_client, wheel_dir, marker, plugins_dir, make_settings
):
    wheel = connector_wheel(wheel_dir, "acme.kite", distribution="acme-kite", marker=marker)
    sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    result = make_client().install(str(wheel))

    assert result.receipt
    assert result.signature_status == "verified"
    assert (plugins_dir / "acme_kite-1.0.0.dist-info" / "aperio-receipt.json").is_file()
    host_key = make_settings().state_dir / "host-key.pem"
    assert host_key.stat().st_mode & 0o777 == 0o600
    with PluginHost(make_settings(), search_path=[]) as host:
        info = host.load().plugins[0]
    assert (info.state, info.signature_status, info.signature_via) == (
        PluginState.ENABLED,
        SignatureStatus.VERIFIED,
        "install receipt",
    )
    assert info.signer == f"sigstore identity {RELEASE_IDENTITY} (issuer {GITHUB_ISSUER})"
    assert imported_ids(marker) == ["acme.kite"]


def test_an_untrusted_wheel_signature_is_refused_and_writes_no_receipt(
    tmp_path, instance, make_client, wheel_dir, marker, plugins_dir, make_settings
):
    wheel = connector_wheel(wheel_dir, "acme.kite", distribution="acme-kite", marker=marker)
    sign_wheel_file_with_sigstore(wheel, instance, identity="mallory@example.com", issuer=GITHUB_ISSUER)
    before = snapshot(plugins_dir)

    with pytest.raises(ArtifactRejectedError, match=r"acme-kite 1.0.0: invalid signature: .*untrusted signer"):
        make_client().install(str(wheel))

    assert snapshot(plugins_dir) == before
    assert not (make_settings().state_dir / "host-key.pem").exists()
    assert not marker.exists()


def test_warn_mode_installs_an_unsigned_plugin_without_a_receipt(make_client, wheel_dir, plugins_dir, make_settings):
    wheel = connector_wheel(wheel_dir, "acme.kite", distribution="acme-kite")

    result = make_client("warn").install(str(wheel))

    assert (result.signature_status, result.receipt) == ("unsigned", False)
    assert not (plugins_dir / "acme_kite-1.0.0.dist-info" / "aperio-receipt.json").exists()
    with PluginHost(make_settings("warn"), search_path=[]) as host:
        assert host.load().plugins[0].signature_status is SignatureStatus.UNSIGNED


def test_a_wheel_that_brings_its_own_receipt_is_refused(instance, make_client, wheel_dir, marker, plugins_dir):
    from aperio_plugins.testing import PluginWheel

    wheel = PluginWheel(
        "acme-kite",
        plugins={"acme.kite": "acme_kite"},
        files={"acme_kite/__init__.py": "", "acme_kite-1.0.0.dist-info/aperio-receipt.json": "{}"},
    ).build(wheel_dir)
    sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
    before = snapshot(plugins_dir)

    with pytest.raises(InstallError, match=r"the wheel carries aperio-receipt\.json; only the host writes one"):
        make_client().install(str(wheel))

    assert snapshot(plugins_dir) == before


def test_a_message_signature_bundle_in_the_index_is_accepted(
    instance, registry, make_client, wheel_dir, make_settings, marker
):
    wheel = connector_wheel(wheel_dir, "acme.kite", distribution="acme-kite", marker=marker)
    sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
    registry.publish(wheel)  # `registry add` lists the bundle beside the wheel as a sigstore-bundle signature
    kinds = [s["kind"] for s in registry.release(registry.document(), "acme.kite", "1.0.0")["signatures"]]
    assert kinds == ["sigstore-bundle"]

    result = make_client().install("acme.kite")

    assert result.receipt
    with PluginHost(make_settings(), search_path=[]) as host:
        assert host.load().plugins[0].signature_via == "install receipt"
    assert imported_ids(marker) == ["acme.kite"]


def test_an_index_bundle_over_another_wheel_is_refused(instance, registry, make_client, wheel_dir, plugins_dir):
    wheel = connector_wheel(wheel_dir, "acme.kite", distribution="acme-kite")
    other = connector_wheel(wheel_dir / "other", "acme.kite", distribution="acme-kite", extra_source="X = 1\n")
    bundle = json.loads(instance.sign_artifact(other.read_bytes(), identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER))
    registry.publish(wheel)
    registry.edit(
        lambda document: registry.release(document, "acme.kite", "1.0.0")["signatures"].append(
            {"kind": "sigstore-bundle", "bundle": bundle}
        )
    )
    before = snapshot(plugins_dir)

    with pytest.raises(ArtifactRejectedError, match=r"acme.kite 1.0.0: invalid signature: .*message digest mismatch"):
        make_client().install("acme.kite")

    assert snapshot(plugins_dir) == before


def _cli(settings, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "APERIO_PLUGINS_DIR": str(settings.plugins_dir),
        "APERIO_STATE_DIR": str(settings.state_dir),
        "APERIO_PLUGIN_TRUST_MODE": "strict",
        "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(settings.plugin_trusted_keys_dir),
        "APERIO_PLUGIN_TRUSTED_IDENTITIES": str(settings.plugin_trusted_identities),
    }
    return subprocess.run([APERIO, *args], capture_output=True, text=True, env=environment, timeout=120, check=False)


def test_the_cli_reports_the_verdict_and_the_receipt(rfc8785, instance, make_settings, wheel_dir, marker):
    settings = make_settings()
    wheel = connector_wheel(wheel_dir, "acme.kite", distribution="acme-kite", marker=marker)
    sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    installed = _cli(settings, "plugin", "install", str(wheel))
    assert installed.returncode == 0, installed.stderr
    assert "install receipt written" in installed.stdout

    # Only the plugins directory's row: the environment running the suite may have plugins of its own.
    listed = [
        row for row in json.loads(_cli(settings, "plugin", "list", "--json").stdout) if row["origin"] == "plugins_dir"
    ]
    assert [row["id"] for row in listed] == ["acme.kite"]
    assert listed[0]["signature_status"] == "verified"
    assert listed[0]["signature_via"] == "install receipt"
    assert listed[0]["signer"] == f"sigstore identity {RELEASE_IDENTITY} (issuer {GITHUB_ISSUER})"
    assert "install receipt" in listed[0]["signature_detail"]
    verified = json.loads(_cli(settings, "plugin", "verify", "acme.kite", "--json").stdout)
    assert (verified["status"], verified["via"]) == ("verified", "install receipt")
    assert RELEASE_IDENTITY in verified["signer"]
    info = _cli(settings, "plugin", "info", "acme.kite").stdout
    assert "install receipt" in info
    assert RELEASE_IDENTITY in info

    # A wheel whose signature verifies but which is no plugin: the verdict is in the line and in --json.
    refused = _cli(settings, "plugin", "install", str(rfc8785))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: rfc8785 0.1.2: invalid signature:")  # the identity is not trusted here
    refused_json = _cli(settings, "plugin", "install", "--json", str(rfc8785))
    assert refused_json.returncode == 1
    document = json.loads(refused_json.stdout)
    assert document["signature"]["status"] == "invalid"
    assert document["error"].startswith("rfc8785 0.1.2: invalid signature:")


def test_install_json_carries_a_verified_verdict_into_a_later_refusal(rfc8785, make_settings):
    settings = make_settings()
    write_identities(settings.plugin_trusted_identities, RFC8785_IDENTITY, GITHUB_ISSUER, PRODUCTION_ROOT)

    refused = _cli(settings, "plugin", "install", "--json", str(rfc8785))

    assert refused.returncode == 1
    document = json.loads(refused.stdout)
    assert document["installed"] == []
    assert document["signature"]["status"] == "verified"
    assert document["signature"]["signer"] == f"sigstore identity {RFC8785_IDENTITY} (issuer {GITHUB_ISSUER})"
    assert document["error"].endswith("— refused: has no entry point in the 'aperio.plugins' group: it is not a plugin")
    line = _cli(settings, "plugin", "install", str(rfc8785))
    assert line.stderr.strip() == f"error: {document['error']}"


def test_doctor_lists_the_pinned_trusted_publishers(make_settings):
    settings = make_settings()
    write_identities(
        settings.plugin_trusted_identities,
        RELEASE_IDENTITY,
        GITHUB_ISSUER,
        PRODUCTION_ROOT,
        extra='\n[[trusted_publisher]]\nkind = "github"\nrepository = "acme/box"\nworkflow = "release.yml"\n',
    )

    report = json.loads(_cli(settings, "doctor", "--json").stdout)

    assert report["trusted_publishers"] == ["github trusted publisher acme/box (workflow release.yml)"]


def test_verify_wheel_checks_the_bundle_beside_it(rfc8785, make_settings):
    settings = make_settings()
    write_identities(settings.plugin_trusted_identities, RFC8785_IDENTITY, GITHUB_ISSUER, PRODUCTION_ROOT)

    verified = _cli(settings, "plugin", "verify", "--json", str(rfc8785))
    rfc8785.with_name(rfc8785.name + ".sigstore.json").unlink()
    unsigned = _cli(settings, "plugin", "verify", "--json", str(rfc8785))

    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["signer"] == f"sigstore identity {RFC8785_IDENTITY} (issuer {GITHUB_ISSUER})"
    assert unsigned.returncode == 1
    assert json.loads(unsigned.stdout)["status"] == "unsigned"
