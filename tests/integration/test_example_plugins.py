"""The three example plugins, built by their real build backend, installed with pip, run by the host
against Box and Splunk HEC emulators on 127.0.0.1: sync, remediate, deliver."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from provider_emulators import ProviderState, provider_server

from aperio_hookspecs import DeliveryBatch, RemediationRequest, RemediationStatus, SyncRequest
from aperio_plugins import PluginState, SignatureStatus
from aperio_plugins.testing import generate_signing_key, install_wheels, sign_wheel_with_key

EXAMPLES = Path(__file__).resolve().parents[2] / "example_plugins"


@pytest.fixture(scope="module")
def example_wheels(tmp_path_factory) -> list[Path]:
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
    wheels = [sign_wheel_with_key(wheel, private_key) for wheel in sorted(out.glob("*.whl"))]
    return wheels, public_key


@pytest.fixture
def signed_host(example_wheels, make_host, plugins_dir, tmp_path):
    """A strict host with the examples' signer trusted: their code is served by the verified importer
    from the plugins directory, whatever copies the running environment has."""
    wheels, public_key = example_wheels
    install_wheels(wheels, target=plugins_dir)
    (tmp_path / "keys").mkdir(mode=0o700)
    shutil.copy(public_key, tmp_path / "keys")

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
    assert {info.signature_status for info in report.plugins} == {SignatureStatus.VERIFIED}
    assert sys.modules["aperio_box_connector.plugin"].__file__.startswith(str(plugins_dir))
    assert list(host.connectors) == ["box"]
    assert list(host.remediations) == ["box.remove-shared-link"]
    assert list(host.destinations) == ["splunk-hec"]

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
