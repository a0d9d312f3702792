"""Install receipts at load: a receipt carries a verified wheel-level signature to the installed files,
and every way of abusing one is refused before any plugin code runs."""

from __future__ import annotations

import shutil

import pytest
from plugin_builders import connector_wheel, imported_ids
from sigstore_helpers import GITHUB_ISSUER, RELEASE_IDENTITY, preload_sigstore, write_identities
from tree_snapshot import snapshot

from aperio_plugins import HostSettings, PluginHost, PluginState, SignatureStatus
from aperio_plugins._receipt import RECEIPT_FILE_NAME, host_key, host_public_key_path, write_receipt
from aperio_plugins.errors import AperioError, ArtifactRejectedError
from aperio_plugins.testing import PluginWheel, install_wheels, sign_wheel_file_with_sigstore


@pytest.fixture(scope="module", autouse=True)
def _sigstore_imported() -> None:
    preload_sigstore()


@pytest.fixture
def installed(instance, make_client, wheel_dir, marker):
    """Install acme.kite and acme.wren, each signed only over its wheel file; return the install function."""

    def installed(*plugin_ids: str) -> None:
        client = make_client()
        for plugin_id in plugin_ids:
            package = plugin_id.replace(".", "_")
            wheel = connector_wheel(
                wheel_dir / package, plugin_id, distribution=package.replace("_", "-"), marker=marker
            )
            sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
            assert client.install(str(wheel)).receipt

    return installed


def _load(settings: HostSettings) -> dict[str, object]:
    with PluginHost(settings, search_path=[]) as host:
        return {info.id: info for info in host.load().plugins}


def test_both_receipts_verify_as_installed(installed, make_settings, marker):
    installed("acme.kite", "acme.wren")

    plugins = _load(make_settings())

    assert {plugin_id: info.signature_status for plugin_id, info in plugins.items()} == {
        "acme.kite": SignatureStatus.VERIFIED,
        "acme.wren": SignatureStatus.VERIFIED,
    }
    assert sorted(imported_ids(marker)) == ["acme.kite", "acme.wren"]


def test_a_receipt_copied_from_another_plugin_is_invalid(installed, make_settings, plugins_dir, marker):
    installed("acme.kite", "acme.wren")
    shutil.copy(
        plugins_dir / "acme_kite-1.0.0.dist-info" / RECEIPT_FILE_NAME,
        plugins_dir / "acme_wren-1.0.0.dist-info" / RECEIPT_FILE_NAME,
    )

    wren = _load(make_settings())["acme.wren"]

    assert (wren.state, wren.signature_status) == (PluginState.FAILED, SignatureStatus.INVALID)
    assert "the signature is for acme-kite 1.0.0, but the installed release is acme-wren 1.0.0" in wren.error
    assert imported_ids(marker) == ["acme.kite"]


def test_a_receipt_from_another_host_is_invalid(installed, make_settings, tmp_path, marker):
    installed("acme.kite")
    other_state = tmp_path / "other-host-state"
    host_key(other_state)  # the other host made its own key on its first install

    kite = _load(make_settings(state_dir=other_state))["acme.kite"]

    assert (kite.state, kite.signature_status) == (PluginState.FAILED, SignatureStatus.INVALID)
    assert "install receipt refused: it is not signed by this host's key" in kite.error
    assert not marker.exists()


def test_a_receipt_on_a_host_without_a_key_is_invalid(installed, make_settings, tmp_path, marker):
    installed("acme.kite")

    kite = _load(make_settings(state_dir=tmp_path / "fresh-state"))["acme.kite"]

    assert kite.signature_status is SignatureStatus.INVALID
    assert "this host has no receipt key" in kite.error
    assert not marker.exists()


@pytest.mark.parametrize("trust", ["strict", "warn"])
def test_an_unsigned_plugin_with_a_forged_receipt_is_never_verified(
    instance, make_settings, plugins_dir, wheel_dir, tmp_path, marker, trust
):
    """An attacker who can write the plugins directory, not the state directory, signs a receipt with a key
    of their own for the trusted publisher."""
    install_wheels(
        [connector_wheel(wheel_dir, "acme.kite", distribution="acme-kite", marker=marker)], target=plugins_dir
    )
    write_receipt(
        plugins_dir,
        plugins_dir / "acme_kite-1.0.0.dist-info",
        distribution="acme-kite",
        version="1.0.0",
        publisher=f"sigstore identity {RELEASE_IDENTITY} (issuer {GITHUB_ISSUER})",
        wheel_sha256="0" * 64,
        state_dir=tmp_path / "attacker-state",
    )
    host_key(make_settings().state_dir)

    kite = _load(make_settings(trust))["acme.kite"]

    assert kite.signature_status is SignatureStatus.INVALID
    assert "install receipt refused: it is not signed by this host's key" in (kite.signature_detail or "")
    if trust == "strict":
        assert kite.state is PluginState.FAILED
        assert not marker.exists()
    else:
        assert kite.state is PluginState.ENABLED  # warn loads invalid plugins, and says so


def test_a_file_changed_after_install_is_invalid(installed, make_settings, plugins_dir, marker):
    installed("acme.kite")
    module = plugins_dir / "acme_kite" / "__init__.py"
    module.write_text(module.read_text() + "\nimport os\n")

    kite = _load(make_settings())["acme.kite"]

    assert (kite.state, kite.signature_status) == (PluginState.FAILED, SignatureStatus.INVALID)
    assert "acme_kite/__init__.py modified" in kite.error
    assert not marker.exists()


def test_a_file_added_after_install_is_invalid(installed, make_settings, plugins_dir, marker):
    installed("acme.kite")
    (plugins_dir / "acme_kite" / "planted.py").write_text("import os\n")

    kite = _load(make_settings())["acme.kite"]

    assert kite.signature_status is SignatureStatus.INVALID
    assert "acme_kite/planted.py unexpected" in kite.error
    assert not marker.exists()


def test_a_receipt_for_a_publisher_no_longer_trusted_is_invalid(installed, make_settings, instance, marker):
    installed("acme.kite")
    settings = make_settings()
    write_identities(
        settings.plugin_trusted_identities, "someone@else.example", GITHUB_ISSUER, instance.trusted_root_path
    )

    kite = _load(settings)["acme.kite"]

    assert kite.signature_status is SignatureStatus.INVALID
    assert "is no longer a trusted identity or publisher" in kite.error
    assert not marker.exists()


def test_a_worker_checks_the_receipt_with_the_hosts_public_key(installed, make_settings, marker):
    installed("acme.kite")
    settings = make_settings(plugin_isolation="process")

    with PluginHost(settings, search_path=[]) as host:
        kite = host.load().plugins[0]
        results = host.hook.aperio_finding_raised(finding=_finding())

    assert (kite.state, kite.signature_status, kite.signature_via) == (
        PluginState.ENABLED,
        SignatureStatus.VERIFIED,
        "install receipt",
    )
    assert results == ["acme.kite"]


def _finding() -> object:
    from plugin_builders import FINDING

    return FINDING


def test_the_host_key_is_created_once_and_private(tmp_path):
    state = tmp_path / "state"

    first = host_key(state)
    second = host_key(state)

    assert (state / "host-key.pem").stat().st_mode & 0o777 == 0o600
    assert first.public_key().public_bytes_raw() == second.public_key().public_bytes_raw()
    assert (state / "host-key.pub.pem").is_file()


def test_an_install_whose_receipt_this_host_could_not_verify_is_refused_as_staged(
    instance, make_client, wheel_dir, plugins_dir, tmp_path, marker
):
    """The staged release is verified again after pip laid it out: here the receipt the install writes
    is signed with the state directory's key while loads check receipts with another configured key."""
    other_state = tmp_path / "other-host-state"
    host_key(other_state)
    client = make_client(plugin_receipt_key=host_public_key_path(other_state))
    wheel = connector_wheel(wheel_dir / "kite", "acme.kite", distribution="acme-kite", marker=marker)
    sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)

    with pytest.raises(
        ArtifactRejectedError,
        match=r"^acme-kite 1\.0\.0: as installed, .*install receipt refused: it is not signed by this host's key",
    ):
        client.install(str(wheel))

    assert not list(plugins_dir.glob("*.dist-info"))
    assert not marker.exists()


def test_a_wheel_that_brings_its_own_receipt_is_refused_and_nothing_is_installed(
    instance, make_client, wheel_dir, plugins_dir
):
    """Only the host writes a receipt: one inside the wheel would otherwise sit where the host's goes."""
    wheel = PluginWheel(
        "acme-kite",
        plugins={"acme.kite": "acme_kite"},
        files={
            "acme_kite/__init__.py": "x = 1\n",
            f"acme_kite-1.0.0.dist-info/{RECEIPT_FILE_NAME}": '{"format": 1, "envelope": {}}\n',
        },
    ).build(wheel_dir)
    sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
    before = snapshot(plugins_dir)

    with pytest.raises(AperioError, match=f"the wheel carries {RECEIPT_FILE_NAME}; only the host writes one"):
        make_client().install(str(wheel))

    assert snapshot(plugins_dir) == before
