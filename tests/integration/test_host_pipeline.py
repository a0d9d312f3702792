"""The pipeline end to end: real wheels, installed by real pip, loaded by a real host."""

from __future__ import annotations

import pytest
from plugin_builders import FINDING, connector_wheel, imported_ids

from aperio_hookspecs import SyncRequest
from aperio_plugins import FailureStage, Origin, PluginCallError, PluginState, SignatureStatus
from aperio_plugins.testing import PluginWheel


def test_installed_plugin_is_enabled_catalogued_and_called(make_host, install, wheel_dir, audit):
    install(connector_wheel(wheel_dir, "acme.alpha", connector="alpha"))
    host = make_host()

    report = host.load()

    (info,) = report.plugins
    assert info.state is PluginState.ENABLED
    assert info.signature_status is SignatureStatus.UNSIGNED
    assert info.origin is Origin.PLUGINS_DIR
    assert info.distribution == "acme-alpha"
    assert info.api_requirement == "<2,>=1.0"
    assert info.connectors == ("alpha",)
    assert list(host.connectors) == ["alpha"]
    assert host.hook.aperio_finding_raised(finding=FINDING) == ["acme.alpha"]
    result = host.run("acme.alpha", SyncRequest(connector="alpha"))
    assert result.next_cursor == "1.0.0"
    assert audit.names("acme.alpha")[:2] == ["plugin.discovered", "plugin.signature.unsigned"]
    assert {"plugin.loaded", "plugin.enabled"} <= set(audit.names("acme.alpha"))


def test_plugins_in_the_running_environment_are_discovered_before_the_plugins_dir(
    make_host, install, wheel_dir, tmp_path, plugins_dir
):
    site = tmp_path / "site"
    install(connector_wheel(wheel_dir / "env", "acme.env"), target=site)
    install(connector_wheel(wheel_dir / "dir", "acme.dir"))
    host = make_host(search_path=[site])

    infos = {info.id: info for info in host.load().plugins}

    assert infos["acme.env"].origin is Origin.ENVIRONMENT
    assert infos["acme.dir"].origin is Origin.PLUGINS_DIR
    assert {info.state for info in infos.values()} == {PluginState.ENABLED}


def test_duplicate_id_first_on_search_path_wins_and_the_other_names_both(
    make_host, install, wheel_dir, tmp_path, marker, audit
):
    site = tmp_path / "site"
    install(
        connector_wheel(wheel_dir / "a", "acme.dup", distribution="first-dup", package="first_dup", marker=marker),
        target=site,
    )
    install(
        connector_wheel(wheel_dir / "b", "acme.dup", distribution="second-dup", package="second_dup", marker=marker)
    )
    host = make_host(search_path=[site])

    rows = [info for info in host.load().plugins if info.id == "acme.dup"]

    winner, loser = rows
    assert winner.state is PluginState.ENABLED
    assert winner.distribution == "first-dup"
    assert loser.state is PluginState.FAILED
    assert "first_dup 1.0.0" in loser.error
    assert "second_dup 1.0.0" in loser.error
    assert host.get("acme.dup").distribution == "first-dup"
    assert imported_ids(marker) == ["acme.dup"]  # only the winner's code ran
    assert audit.fields_of("plugin.duplicate_id")[0]["winner"].startswith("first_dup")


def test_duplicate_id_within_one_directory_resolves_the_same_way_every_time(make_host, install, wheel_dir):
    install(
        connector_wheel(wheel_dir, "acme.twin", distribution="zz-twin", package="zz_twin"),
        connector_wheel(wheel_dir, "acme.twin", distribution="aa-twin", package="aa_twin"),
    )
    winners = set()
    for _ in range(2):
        host = make_host()
        host.load()
        winners.add(host.get("acme.twin").distribution)
    assert winners == {"aa-twin"}


def test_strict_trust_refuses_unsigned_plugins_without_importing_them(make_host, install, wheel_dir, marker, audit):
    install(connector_wheel(wheel_dir, "acme.unsigned", marker=marker))
    host = make_host("strict")

    (info,) = host.load().plugins

    assert info.state is PluginState.FAILED
    assert info.failure_stage is FailureStage.VERIFY
    assert "unsigned plugin refused in strict trust mode" in info.error
    assert imported_ids(marker) == []
    assert "plugin.load.failed" in audit.names("acme.unsigned")


def test_disabled_trust_mode_outside_development_warns_and_skips_checks(make_host, install, wheel_dir, audit):
    from aperio_plugins import AperioWarning

    install(connector_wheel(wheel_dir, "acme.sandbox"))
    with pytest.warns(AperioWarning, match="outside a development environment"):
        host = make_host("disabled")
    (info,) = host.load().plugins
    assert info.signature_status is SignatureStatus.SKIPPED
    assert info.state is PluginState.ENABLED
    assert "host.trust.disabled" in audit.names()


def test_disabled_trust_mode_in_development_is_quiet(make_host, recwarn):
    make_host("disabled", environment="development")
    assert not [w for w in recwarn if "development" in str(w.message)]


def test_a_plugin_that_raises_on_every_call_never_stops_the_others(make_host, install, wheel_dir, audit):
    raising = (
        "\n@hookimpl(tryfirst=True)\ndef aperio_finding_raised(finding):\n    raise RuntimeError('provider down')\n"
    )
    install(
        connector_wheel(wheel_dir, "acme.good"),
        PluginWheel(
            "acme-bad",
            plugins={"acme.bad": "acme_bad"},
            files={"acme_bad/__init__.py": "from aperio_hookspecs import hookimpl\n" + raising},
        ).build(wheel_dir),
    )
    host = make_host()
    host.load()

    for _ in range(3):
        assert host.hook.aperio_finding_raised(finding=FINDING) == ["acme.good"]

    bad = host.get("acme.bad")
    assert bad.state is PluginState.ENABLED
    assert bad.call_failures == 3
    assert bad.last_call_error == "aperio_finding_raised: RuntimeError: provider down"
    failures = audit.fields_of("plugin.call.failed")
    assert len(failures) == 3
    assert failures[0]["plugin_id"] == "acme.bad"
    assert "provider down" in failures[0]["traceback"]


def test_unguarded_host_lets_plugin_exceptions_reach_the_caller(make_host, install, wheel_dir):
    raising = "from aperio_hookspecs import hookimpl\n@hookimpl\ndef aperio_finding_raised(finding):\n    raise RuntimeError('x')\n"
    install(
        PluginWheel("acme-bad", plugins={"acme.bad": "acme_bad"}, files={"acme_bad/__init__.py": raising}).build(
            wheel_dir
        )
    )
    host = make_host(guard_calls=False)
    host.load()
    with pytest.raises(RuntimeError, match="x"):
        host.hook.aperio_finding_raised(finding=FINDING)


def test_a_hookspec_can_opt_into_propagating_errors(make_host, install, wheel_dir):
    class ValidationSpecs:
        from aperio_hookspecs import hookspec, propagate_errors

        @propagate_errors
        @hookspec
        def acme_validate(self, value: str) -> None:
            """Refuse a value by raising."""

        @hookspec
        def acme_observe(self, value: str) -> None:
            """Watch values; failures are the plugin's own."""

    source = (
        "from aperio_hookspecs import hookimpl\n"
        "@hookimpl\ndef acme_validate(value):\n    raise ValueError('refused: ' + value)\n"
        "@hookimpl\ndef acme_observe(value):\n    raise ValueError('observer broke')\n"
    )
    install(
        PluginWheel("acme-val", plugins={"acme.val": "acme_val"}, files={"acme_val/__init__.py": source}).build(
            wheel_dir
        )
    )
    host = make_host(hookspecs=[ValidationSpecs])
    host.load()

    assert host.hook.acme_observe(value="x") == []
    with pytest.raises(PluginCallError, match="failed in hook acme_validate: ValueError: refused: x") as raised:
        host.hook.acme_validate(value="x")
    assert isinstance(raised.value.__cause__, ValueError)  # the plugin's own exception, as its cause
    assert raised.value.plugin_id == "acme.val"
    assert host.get("acme.val").call_failures == 2


def test_load_only_brings_up_the_named_plugins(make_host, install, wheel_dir, marker):
    install(
        connector_wheel(wheel_dir, "acme.wanted", marker=marker),
        connector_wheel(wheel_dir, "acme.other", marker=marker),
    )
    host = make_host()
    assert [info.id for info in host.load(only=["acme.wanted"]).plugins] == ["acme.wanted"]
    assert imported_ids(marker) == ["acme.wanted"]
