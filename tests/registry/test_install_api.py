"""`POST /api/v1/plugins/install` against a real registry (HTTPS on 127.0.0.1) and a real uvicorn: the
CLI's checks, the host loads what was installed, a refusal answers one line and changes nothing."""

from __future__ import annotations

import pytest
from live_server import Api
from plugin_builders import connector_wheel
from tree_snapshot import snapshot

from aperio_plugins import PluginHost
from aperio_plugins._state import SQLiteStateStore
from aperio_plugins.api._trail import recording_audit_logger


@pytest.fixture
def published(registry, sign, wheel_dir):
    for version in ("1.0.0", "1.1.0"):
        registry.publish(sign(connector_wheel(wheel_dir, "acme.alpha", distribution="acme-alpha", version=version)))
    return registry


@pytest.fixture
def api(make_settings):
    settings = make_settings()
    store = SQLiteStateStore.in_directory(settings.state_dir)
    host = PluginHost(settings, search_path=[], state_store=store, audit_logger=recording_audit_logger(store))
    host.load()
    with Api(host, store) as api:
        yield api
    host.close()


def test_install_then_upgrade_loads_the_verified_plugin_and_audits_the_actor(published, api):
    client = api.client("operator")
    first = client.post("/api/v1/plugins/install", json={"spec": "acme.alpha@1.0.0"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["installed"]["version"], body["installed"]["signature"]["status"]) == ("1.0.0", "verified")
    assert [(p["id"], p["version"], p["state"], p["signature_status"]) for p in body["plugins"]] == [
        ("acme.alpha", "1.0.0", "enabled", "verified")
    ]
    upgrade = client.post("/api/v1/plugins/install", json={"spec": "acme.alpha"}).json()
    assert [(p["version"], p["state"]) for p in upgrade["plugins"]] == [("1.1.0", "enabled")]
    assert api.host.get("acme.alpha").version == "1.1.0"
    events = [(e.event, e.actor) for e in api.store.audit_events(plugin_id="acme.alpha", limit=500)]
    assert ("plugin.reload.completed", "operator") in events
    install_events = api.store.audit_events(event="api.plugins.install")
    assert [(e.actor, e.fields["outcome"], e.fields["spec"]) for e in install_events] == [
        ("operator", "ok", "acme.alpha"),
        ("operator", "ok", "acme.alpha@1.0.0"),
    ]


def test_an_unsigned_release_is_refused_in_one_line_with_nothing_changed(published, api, wheel_dir, plugins_dir):
    client = api.client("admin")
    assert client.post("/api/v1/plugins/install", json={"spec": "acme.alpha@1.0.0"}).status_code == 200
    published.publish(connector_wheel(wheel_dir / "u", "acme.alpha", distribution="acme-alpha", version="1.2.0"))
    before = snapshot(plugins_dir)
    refused = client.post("/api/v1/plugins/install", json={"spec": "acme.alpha@1.2.0"})
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail.startswith(
        "install of 'acme.alpha@1.2.0' refused: acme.alpha 1.2.0: unsigned plugin refused in strict trust mode"
    )
    assert "\n" not in detail
    assert snapshot(plugins_dir) == before
    assert (api.host.get("acme.alpha").version, api.host.get("acme.alpha").state.value) == ("1.0.0", "enabled")
    refusal = api.store.audit_events(event="api.plugins.install", limit=1)[0]
    assert (refusal.actor, refusal.fields["outcome"]) == ("admin", "409")
