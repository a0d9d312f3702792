"""Installing from a real OCI registry on 127.0.0.1 through the client: the same checks as from an index."""

from __future__ import annotations

import json

import pytest
import requests
from oci_registry import OciRegistry, docker_registry_available
from plugin_builders import connector_wheel
from tree_snapshot import snapshot

from aperio_plugins import PluginHost, PluginState, SignatureStatus
from aperio_plugins.errors import ArtifactRejectedError
from aperio_plugins.registry._oci import MANIFEST_MEDIA_TYPE, SIGNATURE_MEDIA_TYPE, OciReference, push_wheel
from aperio_plugins.registry._transfer import TransferLimits

pytestmark = pytest.mark.skipif(
    not docker_registry_available(), reason="docker-registry is not installed (apt-get install docker-registry)"
)


@pytest.fixture(scope="module")
def oci():
    with OciRegistry(tls=True) as registry:
        yield registry


@pytest.fixture
def oci_client(make_client, oci):
    return make_client(registry_ca_bundle=oci.ca_bundle)


def push(oci, wheel, reference: str) -> str:
    limits = TransferLimits(
        max_bytes=10 << 20, connect_timeout=5, read_timeout=5, total_timeout=30, ca_bundle=oci.ca_bundle
    )
    return push_wheel(wheel, OciReference.parse(reference), limits)


def manifest(oci, repository: str, tag: str) -> dict:
    response = requests.get(
        f"{oci.base_url}/v2/{repository}/manifests/{tag}",
        headers={"Accept": MANIFEST_MEDIA_TYPE},
        verify=str(oci.ca_bundle),
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def test_install_from_oci_then_the_host_loads_it_and_the_lock_pins_the_manifest(
    oci, oci_client, sign, wheel_dir, plugins_dir
):
    wheel = sign(connector_wheel(wheel_dir, "acme.ocean", distribution="acme-ocean"))
    digest = push(oci, wheel, f"oci://{oci.registry}/plugins/acme-ocean:1.0.0")
    result = oci_client.install(f"oci://{oci.registry}/plugins/acme-ocean:1.0.0")
    assert (result.plugin_ids, result.version) == (("acme.ocean",), "1.0.0")
    assert result.source == f"oci://{oci.registry}/plugins/acme-ocean@{digest}"
    with PluginHost(oci_client.settings, search_path=[]) as host:
        info = host.load().plugins[0]
    assert (info.state, info.signature_status) == (PluginState.ENABLED, SignatureStatus.VERIFIED)

    lock = oci_client.lock()
    assert lock.plugins[0].source.endswith(f"@{digest}")
    oci_client.remove("acme.ocean")
    reinstalled = oci_client.install_locked(lock)
    assert reinstalled[0].version == "1.0.0"
    assert (plugins_dir / "acme_ocean-1.0.0.dist-info").is_dir()


def test_an_unsigned_artifact_is_refused_in_strict_and_nothing_is_installed(oci, oci_client, wheel_dir, plugins_dir):
    push(
        oci,
        connector_wheel(wheel_dir, "acme.drift", distribution="acme-drift"),
        f"oci://{oci.registry}/plugins/acme-drift:1",
    )
    with pytest.raises(ArtifactRejectedError, match="unsigned"):
        oci_client.install(f"oci://{oci.registry}/plugins/acme-drift:1")
    assert snapshot(plugins_dir) == {}


def test_a_corrupted_blob_is_refused_and_nothing_is_installed(oci, oci_client, sign, wheel_dir, plugins_dir):
    wheel = sign(connector_wheel(wheel_dir, "acme.reef", distribution="acme-reef"))
    push(oci, wheel, f"oci://{oci.registry}/plugins/acme-reef:1")
    layer = manifest(oci, "plugins/acme-reef", "1")["layers"][0]
    oci.corrupt_blob(layer["digest"])
    with pytest.raises(ArtifactRejectedError, match=r"digest|sha256"):
        oci_client.install(f"oci://{oci.registry}/plugins/acme-reef:1")
    assert snapshot(plugins_dir) == {}


def test_a_signature_layer_from_another_plugin_is_refused(oci, oci_client, sign, wheel_dir, plugins_dir):
    """A registry pairs a trusted author's signature of one plugin with another plugin's wheel."""
    mine = sign(connector_wheel(wheel_dir / "a", "acme.kelp", distribution="acme-kelp"))
    theirs = sign(connector_wheel(wheel_dir / "b", "acme.wave", distribution="acme-wave"))
    push(oci, mine, f"oci://{oci.registry}/plugins/mixed:kelp")
    push(oci, theirs, f"oci://{oci.registry}/plugins/mixed:wave")
    swapped = manifest(oci, "plugins/mixed", "kelp")
    wave_signature = next(
        d for d in manifest(oci, "plugins/mixed", "wave")["layers"] if d["mediaType"] == SIGNATURE_MEDIA_TYPE
    )
    swapped["layers"] = [
        layer if layer["mediaType"] != SIGNATURE_MEDIA_TYPE else wave_signature for layer in swapped["layers"]
    ]
    oci.put_manifest("plugins/mixed", "swapped", json.loads(json.dumps(swapped)))
    with pytest.raises(
        ArtifactRejectedError,
        match=r"the published signature does not verify: it signs acme-wave 1.0.0, not this wheel",
    ):
        oci_client.install(f"oci://{oci.registry}/plugins/mixed:swapped")
    assert snapshot(plugins_dir) == {}


def test_a_bundle_over_the_wheel_is_pushed_as_a_layer_and_installs_with_a_receipt(
    instance, oci, oci_client, wheel_dir, plugins_dir, marker
):
    from sigstore_helpers import GITHUB_ISSUER, RELEASE_IDENTITY

    from aperio_plugins.registry._oci import BUNDLE_MEDIA_TYPE
    from aperio_plugins.testing import sign_wheel_file_with_sigstore

    wheel = connector_wheel(wheel_dir, "acme.gull", distribution="acme-gull", marker=marker)
    sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
    push(oci, wheel, f"oci://{oci.registry}/plugins/acme-gull:1")
    layers = manifest(oci, "plugins/acme-gull", "1")["layers"]
    assert [layer["mediaType"] for layer in layers][1:] == [BUNDLE_MEDIA_TYPE]

    result = oci_client.install(f"oci://{oci.registry}/plugins/acme-gull:1")

    assert result.receipt
    with PluginHost(oci_client.settings, search_path=[]) as host:
        info = host.load().plugins[0]
    assert (info.state, info.signature_via) == (PluginState.ENABLED, "install receipt")
    assert marker.read_text() == "acme.gull\n"


def test_a_bundle_layer_from_another_wheel_is_refused(instance, oci, oci_client, wheel_dir, plugins_dir, marker):
    from sigstore_helpers import GITHUB_ISSUER, RELEASE_IDENTITY

    from aperio_plugins.registry._oci import BUNDLE_MEDIA_TYPE
    from aperio_plugins.testing import sign_wheel_file_with_sigstore

    mine = connector_wheel(wheel_dir / "a", "acme.tern", distribution="acme-tern", marker=marker)
    theirs = connector_wheel(wheel_dir / "b", "acme.tern", distribution="acme-tern", extra_source="X = 2\n")
    sign_wheel_file_with_sigstore(theirs, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
    push(oci, theirs, f"oci://{oci.registry}/plugins/acme-tern:theirs")
    push(oci, mine, f"oci://{oci.registry}/plugins/acme-tern:mine")
    swapped = manifest(oci, "plugins/acme-tern", "mine")
    swapped["layers"] += [
        d for d in manifest(oci, "plugins/acme-tern", "theirs")["layers"] if d["mediaType"] == BUNDLE_MEDIA_TYPE
    ]
    oci.put_manifest("plugins/acme-tern", "swapped", swapped)
    before = snapshot(plugins_dir)

    with pytest.raises(ArtifactRejectedError, match=r"invalid signature: .*message digest mismatch"):
        oci_client.install(f"oci://{oci.registry}/plugins/acme-tern:swapped")

    assert snapshot(plugins_dir) == before
    assert not marker.exists()
