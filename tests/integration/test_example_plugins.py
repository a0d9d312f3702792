"""The three example plugins, built by their real build backend, installed with pip, run by the host
against Box and Splunk HEC emulators on 127.0.0.1: sync, remediate, deliver."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from datetime import datetime, timezone
from pathlib import Path

import pytest
from provider_emulators import ProviderState, provider_server
from sigstore_helpers import GITHUB_ISSUER, RELEASE_IDENTITY, write_identities

from aperio_hookspecs import DeliveryBatch, RemediationRequest, RemediationStatus, SyncRequest
from aperio_plugins import PluginState, SignatureStatus
from aperio_plugins.registry._index import Publisher
from aperio_plugins.registry._publish import add_release
from aperio_plugins.testing import (
    PrivateSigstore,
    generate_signing_key,
    sign_wheel_file_with_sigstore,
    sign_wheel_with_key,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "example_plugins"
EXAMPLE_IDS = ("aperio.box-connector", "aperio.box-remediation", "aperio.splunk-hec")


@pytest.fixture(scope="module")
def example_wheels(tmp_path_factory) -> tuple[list[Path], Path, PrivateSigstore]:
    """The examples built by their own backend. The Box connector is signed as publishers sign with
    `sigstore sign`: a message-signature bundle beside the wheel (from the private test instance), no
    signature inside; the other two carry an embedded Ed25519 signature."""
    out = tmp_path_factory.mktemp("example-wheels")
    folders = [str(EXAMPLES / name) for name in ("box-connector", "box-remediation", "splunk-hec")]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            *folders,
        ],
        check=True,
    )
    private_key, public_key = generate_signing_key(out / "author")
    instance = PrivateSigstore.create(out / "sigstore")
    wheels = []
    for wheel in sorted(out.glob("*.whl")):
        if wheel.name.startswith("aperio_box_connector-"):
            sign_wheel_file_with_sigstore(wheel, instance, identity=RELEASE_IDENTITY, issuer=GITHUB_ISSUER)
            wheels.append(wheel)
        else:
            wheels.append(sign_wheel_with_key(wheel, private_key))
    return wheels, public_key, instance


def _environment_without_examples(tmp_path: Path) -> dict[str, str]:
    """Return an environment for `python -S` whose import path is this one's without the example plugins,
    as on a host that gets them only from its plugins directory (the installer refuses a plugin id the
    host's environment already provides)."""
    site = Path(sysconfig.get_paths()["purelib"])
    clean = tmp_path / "site-without-examples"
    clean.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith(("aperio_box_", "aperio_splunk_")):
            (clean / entry.name).symlink_to(entry)
    editable = [line for pth in sorted(site.glob("_editable_impl_aperio_*.pth")) for line in pth.read_text().split()]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(clean), *editable])}


@pytest.fixture
def signed_host(example_wheels, make_host, plugins_dir, tmp_path):
    """A strict host that trusts the examples' signers, with the examples installed by `aperio plugin install`
    from a local (file:) index, in a process whose environment lacks the examples: the Box connector's code is trusted through the install receipt written
    when its wheel-level Sigstore signature verified."""
    wheels, public_key, instance = example_wheels
    (tmp_path / "keys").mkdir(mode=0o700)
    shutil.copy(public_key, tmp_path / "keys")
    identities = tmp_path / "trusted-identities.toml"
    write_identities(identities, RELEASE_IDENTITY, GITHUB_ISSUER, instance.trusted_root_path)
    index = tmp_path / "index" / "index.json"
    index.parent.mkdir()
    for wheel in wheels:
        for path in wheel.parent.glob(f"{wheel.name}*"):
            shutil.copy(path, index.parent)
        add_release(
            index, index.parent / wheel.name, wheel.name, Publisher(name="aperio"), now=datetime.now(timezone.utc)
        )
    environment = {
        **_environment_without_examples(tmp_path),
        "APERIO_PLUGINS_DIR": str(plugins_dir),
        "APERIO_STATE_DIR": str(tmp_path / "state"),
        "APERIO_PLUGIN_TRUST_MODE": "strict",
        "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(tmp_path / "keys"),
        "APERIO_PLUGIN_TRUSTED_IDENTITIES": str(identities),
        "APERIO_REGISTRY_INDEX": index.as_uri(),
    }
    command = [sys.executable, "-S", "-c", "from aperio_plugins.cli import main; main()", "plugin", "install"]
    installed = subprocess.run(
        [*command, "--json", *EXAMPLE_IDS], capture_output=True, text=True, env=environment, timeout=300, check=False
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    results = json.loads(installed.stdout)["installed"]
    assert [result["install_receipt"] for result in results] == [True, False, False]

    def signed_host(credential_provider):
        return make_host("strict", credential_provider=credential_provider)

    return signed_host


@pytest.fixture
def provider():
    state = ProviderState(
        users=[
            {"type": "user", "id": "1", "name": "Ada", "login": "ada@example.com", "role": "admin", "status": "active"},
            {
                "type": "user",
                "id": "2",
                "name": "Old Admin",
                "login": "old@example.com",
                "role": "coadmin",
                "status": "inactive",
            },
        ],
        events=[
            {
                "type": "event",
                "event_id": "ev-1",
                "event_type": "SHARE",
                "created_at": "2026-11-20T10:00:00-08:00",
                "created_by": {"type": "user", "id": "1", "name": "Ada", "login": "ada@example.com"},
                "ip_address": "198.51.100.7",
                "source": {
                    "type": "file",
                    "id": "123",
                    "name": "payroll.xlsx",
                    "shared_link": {"url": "https://app.box.com/s/x", "access": "open", "effective_access": "open"},
                },
            },
            {
                "type": "event",
                "event_id": "ev-2",
                "event_type": "LOGIN",
                "created_at": "2026-11-20T11:00:00-08:00",
                "created_by": {"type": "user", "id": "1", "name": "Ada", "login": "ada@example.com"},
            },
        ],
        files={"123": {"type": "file", "id": "123", "name": "payroll.xlsx", "shared_link": {"access": "open"}}},
    )
    with provider_server(state) as url:
        yield state, url


def test_sync_remediate_and_deliver_through_the_host(signed_host, provider, plugins_dir):
    state, url = provider
    tokens = {"box:read": state.box_token, "box:write": state.box_token, "splunk:hec": state.hec_token}
    host = signed_host(lambda plugin_id, scope: tokens[scope])

    report = host.load()
    assert {info.id: info.state for info in report.plugins} == {
        "aperio.box-connector": PluginState.ENABLED,
        "aperio.box-remediation": PluginState.ENABLED,
        "aperio.splunk-hec": PluginState.ENABLED,
    }
    # The example manifests declare their hooks: nothing is verified or imported before first use.
    assert all(info.activation_pending and info.signature_status is None for info in report.plugins)
    # Not imported from the plugins directory yet (the dev venv may hold its own copy, imported by other tests).
    assert not (getattr(sys.modules.get("aperio_box_connector.plugin"), "__file__", None) or "").startswith(
        str(plugins_dir)
    )
    assert list(host.connectors) == ["box"]
    assert list(host.remediations) == ["box.remove-shared-link"]
    assert list(host.destinations) == ["splunk-hec"]
    report = host.load()
    assert not any(info.activation_pending for info in report.plugins)
    assert {info.signature_status for info in report.plugins} == {SignatureStatus.VERIFIED}
    via = {info.id: info.signature_via for info in report.plugins}
    assert via == {
        "aperio.box-connector": "install receipt",
        "aperio.box-remediation": "embedded",
        "aperio.splunk-hec": "embedded",
    }
    assert report.plugins[0].signer == f"sigstore identity {RELEASE_IDENTITY} (issuer {GITHUB_ISSUER})"
    assert sys.modules["aperio_box_connector.plugin"].__file__.startswith(str(plugins_dir))

    synced = host.run("aperio.box-connector", SyncRequest(connector="box", config={"base_url": url}))
    assert [event.id for event in synced.events] == ["ev-1", "ev-2"]
    titles = {finding.resource.id: finding for finding in synced.findings}
    open_link = titles["123"]
    assert open_link.remediation_action == "box.remove-shared-link"
    assert "2" in titles  # the inactive co-admin
    assert synced.next_cursor == "2"

    request = RemediationRequest(
        id="rem-1", action=open_link.remediation_action, resource=open_link.resource, config={"base_url": url}
    )
    remediated = host.run("aperio.box-remediation", request)
    assert remediated.status is RemediationStatus.SUCCEEDED
    assert state.files["123"]["shared_link"] is None

    batch = DeliveryBatch(destination="splunk-hec", envelopes=(*synced.events, *synced.findings), config={"url": url})
    receipt = host.run("aperio.splunk-hec", batch)
    assert sorted(receipt.accepted) == sorted(envelope.id for envelope in batch.envelopes)
    assert receipt.rejected == ()
    assert sorted(event["event"]["id"] for event in state.hec_events) == sorted(receipt.accepted)


def test_a_plugin_without_its_credential_fails_alone(signed_host, provider):
    _, url = provider
    host = signed_host(lambda plugin_id, scope: "wrong-token")
    host.load()
    from aperio_plugins import PluginCallError

    with pytest.raises(PluginCallError, match="HTTP 401"):
        host.run("aperio.box-connector", SyncRequest(connector="box", config={"base_url": url}))
    assert host.get("aperio.box-connector").call_failures == 1
    assert host.get("aperio.splunk-hec").state is PluginState.ENABLED
