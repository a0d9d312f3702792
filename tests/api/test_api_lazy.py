"""The operator API over plugins that wait for their first use (lazy activation): listed with their
signature status after a discovery, changed without being imported."""

from __future__ import annotations

from plugin_builders import connector_wheel, imported_ids

from aperio_plugins.testing import manifest_toml


def test_a_discovered_pending_plugin_shows_its_signature_and_is_disabled_without_being_imported(
    served, install, wheel_dir, marker
):
    api = served()
    client = api.client("admin")
    section = {
        "summary": "lazy",
        "kinds": ["connector"],
        "hooks": ["aperio_finding_raised", "aperio_register_connectors"],
    }
    install(connector_wheel(wheel_dir, "acme.lazy", manifest=manifest_toml({"acme.lazy": section}), marker=marker))

    back = client.post("/api/v1/plugins/discover").json()
    (plugin,) = back["plugins"]
    assert (plugin["id"], plugin["state"], plugin["signature_status"], plugin["activation_pending"]) == (
        "acme.lazy",
        "enabled",
        "unsigned",  # verified (hashed) at discovery, not imported
        True,
    )
    assert imported_ids(marker) == []

    disabled = client.post("/api/v1/plugins/acme.lazy/disable")
    assert disabled.status_code == 200
    assert (disabled.json()["plugin"]["state"], disabled.json()["plugin"]["enabled_flag"]) == ("disabled", False)
    assert imported_ids(marker) == []  # a disabled pending plugin is never imported

    enabled = client.post("/api/v1/plugins/acme.lazy/enable").json()
    assert (enabled["plugin"]["state"], enabled["plugin"]["activation_pending"]) == ("enabled", False)
    assert imported_ids(marker) == ["acme.lazy"]
