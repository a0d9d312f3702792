"""Lifecycle transitions, every (state, operation) pair, and what persists across restarts."""

from __future__ import annotations

import pytest
from plugin_builders import FINDING, connector_wheel, imported_ids

from aperio_plugins import LifecycleError, PluginLoadError, PluginState, UnknownPluginError
from aperio_plugins.testing import PluginWheel

PLUGIN = "acme.life"


@pytest.fixture
def life_wheel(wheel_dir, marker):
    return connector_wheel(wheel_dir, PLUGIN, package="acme_life", marker=marker)


def _host_in_state(state, make_host, install, life_wheel, wheel_dir):
    if state == "failed":
        broken = PluginWheel(
            "acme-life",
            plugins={PLUGIN: "acme_life"},
            files={"acme_life/__init__.py": "raise ImportError('broken build')\n"},
        )
        install(broken.build(wheel_dir / "broken"))
    else:
        install(life_wheel)
    if state == "disabled_not_imported":
        make_host().persist_enabled(PLUGIN, False)
    host = make_host()
    host.load()
    if state == "disabled":
        host.disable(PLUGIN)
    elif state == "unloaded":
        host.unload(PLUGIN)
    return host


START_STATES = ["enabled", "disabled", "disabled_not_imported", "unloaded", "failed"]
EXPECTED = {
    ("enabled", "enable"): PluginState.ENABLED,
    ("enabled", "disable"): PluginState.DISABLED,
    ("enabled", "unload"): PluginState.UNLOADED,
    ("enabled", "reload"): PluginState.ENABLED,
    ("disabled", "enable"): PluginState.ENABLED,
    ("disabled", "disable"): PluginState.DISABLED,
    ("disabled", "unload"): PluginState.UNLOADED,
    ("disabled", "reload"): PluginState.DISABLED,
    ("disabled_not_imported", "enable"): PluginState.ENABLED,
    ("disabled_not_imported", "disable"): PluginState.DISABLED,
    ("disabled_not_imported", "unload"): PluginState.UNLOADED,
    ("disabled_not_imported", "reload"): PluginState.DISABLED,
    ("unloaded", "enable"): PluginState.ENABLED,
    ("unloaded", "disable"): PluginState.DISABLED,
    ("unloaded", "unload"): LifecycleError,
    ("unloaded", "reload"): PluginState.ENABLED,
    ("failed", "enable"): LifecycleError,
    ("failed", "disable"): PluginState.DISABLED,
    ("failed", "unload"): LifecycleError,
    ("failed", "reload"): PluginLoadError,
}


@pytest.mark.parametrize(("start", "operation"), list(EXPECTED))
def test_every_lifecycle_transition(start, operation, make_host, install, life_wheel, wheel_dir):
    host = _host_in_state(start, make_host, install, life_wheel, wheel_dir)
    before = host.get(PLUGIN)
    expected = EXPECTED[(start, operation)]

    if isinstance(expected, type):
        with pytest.raises(expected, match=PLUGIN):
            getattr(host, operation)(PLUGIN)
        assert host.get(PLUGIN).state is before.state
        return

    info = getattr(host, operation)(PLUGIN)

    assert info.state is expected
    assert host.get(PLUGIN).state is expected
    receives_calls = host.hook.aperio_finding_raised(finding=FINDING) == [PLUGIN]
    assert receives_calls == (expected is PluginState.ENABLED)
    assert ("acme_life" in host.connectors) == (expected is PluginState.ENABLED)


def test_disabled_yesterday_is_not_imported_today(make_host, install, life_wheel, marker, audit):
    install(life_wheel)
    first = make_host()
    first.load()
    first.disable(PLUGIN)
    first.close()
    marker.unlink()

    second = make_host()
    (info,) = second.load().plugins

    assert info.state is PluginState.DISABLED
    assert info.enabled_flag is False
    assert imported_ids(marker) == []
    second.enable(PLUGIN)
    assert imported_ids(marker) == [PLUGIN]
    third = make_host()
    assert third.load().plugins[0].state is PluginState.ENABLED


def test_persist_enabled_refuses_an_id_that_is_not_installed(make_host, install, life_wheel):
    install(life_wheel)
    with pytest.raises(UnknownPluginError, match=r"no installed plugin with id 'acme.nope' \(installed: acme.life\)"):
        make_host().persist_enabled("acme.nope", False)


def test_operations_on_an_unknown_id_name_the_known_ones(make_host, install, life_wheel):
    install(life_wheel)
    host = make_host()
    host.load()
    for operation in ("enable", "disable", "unload", "reload", "get"):
        with pytest.raises(UnknownPluginError, match=r"known: acme.life"):
            getattr(host, operation)("acme.nope")


def test_reload_picks_up_a_new_version_in_place_and_keeps_disabled(make_host, install, wheel_dir):
    install(connector_wheel(wheel_dir / "v1", PLUGIN, package="acme_life", connector="life"))
    host = make_host()
    host.load()
    host.disable(PLUGIN)

    install(connector_wheel(wheel_dir / "v2", PLUGIN, package="acme_life", connector="life", version="2.0.0"))
    info = host.reload(PLUGIN)

    assert info.state is PluginState.DISABLED
    assert info.version == "2.0.0"
    host.enable(PLUGIN)
    assert host.run(PLUGIN, {"kind": "sync_request", "connector": "life"}).next_cursor == "2.0.0"


def test_a_failed_reload_keeps_the_loaded_version_running(make_host, install, wheel_dir, audit):
    install(connector_wheel(wheel_dir / "v1", PLUGIN, package="acme_life", connector="life"))
    host = make_host()
    host.load()
    broken = PluginWheel(
        "acme-life",
        version="2.0.0",
        plugins={PLUGIN: "acme_life"},
        files={"acme_life/__init__.py": "raise ImportError('half-written upgrade')\n"},
    )
    install(broken.build(wheel_dir / "v2"))

    with pytest.raises(PluginLoadError, match=r"the loaded version keeps running: .*half-written upgrade"):
        host.reload(PLUGIN)

    info = host.get(PLUGIN)
    assert info.state is PluginState.ENABLED
    assert info.version == "1.0.0"
    assert host.run(PLUGIN, {"kind": "sync_request", "connector": "life"}).next_cursor == "1.0.0"
    assert "plugin.reload.failed" in audit.names(PLUGIN)


def test_reload_of_a_fixed_plugin_brings_it_up(make_host, install, wheel_dir, life_wheel):
    broken = PluginWheel(
        "acme-life", plugins={PLUGIN: "acme_life"}, files={"acme_life/__init__.py": "raise ImportError('x')\n"}
    )
    install(broken.build(wheel_dir / "broken"))
    host = make_host()
    assert host.load().plugins[0].state is PluginState.FAILED
    install(life_wheel)
    assert host.reload(PLUGIN).state is PluginState.ENABLED


def test_unloaded_plugin_comes_back_at_the_next_load(make_host, install, life_wheel, audit):
    install(life_wheel)
    host = make_host()
    host.load()
    host.unload(PLUGIN)
    assert "acme_life" not in __import__("sys").modules
    host.load()
    assert host.get(PLUGIN).state is PluginState.ENABLED
    names = audit.names(PLUGIN)
    assert names.index("plugin.unloaded") < len(names) - 1 - names[::-1].index("plugin.enabled")


def test_enable_refuses_when_another_plugin_took_the_catalog_name(make_host, install, wheel_dir):
    install(
        connector_wheel(wheel_dir, "acme.one", package="acme_one", connector="shared"),
    )
    host = make_host()
    host.load()
    host.disable("acme.one")
    install(connector_wheel(wheel_dir, "acme.two", package="acme_two", connector="shared"))
    host.load()
    assert host.get("acme.two").state is PluginState.ENABLED

    with pytest.raises(LifecycleError, match=r"connector 'shared' is already registered by plugin 'acme\.two'"):
        host.enable("acme.one")
    assert host.get("acme.one").state is PluginState.DISABLED


def test_closed_host_refuses_to_load(make_host):
    host = make_host()
    host.close()
    with pytest.raises(LifecycleError, match="closed"):
        host.load()
