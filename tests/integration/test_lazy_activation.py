"""Lazy activation: a plugin whose manifest declares its hooks is admitted at load and verified,
imported and registered on first use. Each refusal is checked with the marker file: the refused
plugin's code never ran."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from plugin_builders import FINDING, connector_wheel, imported_ids

from aperio_hookspecs import SyncRequest
from aperio_plugins import FailureStage, PluginState, SignatureStatus
from aperio_plugins.errors import LifecycleError, ManifestError
from aperio_plugins.testing import generate_signing_key, manifest_toml, sign_wheel_with_key

HOOKS = ["aperio_finding_raised", "aperio_register_connectors"]


def lazy_wheel(directory: Path, plugin_id: str, *, hooks: list[str] | None = HOOKS, **options: object) -> Path:
    """A connector plugin (`plugin_builders.CONNECTOR_SOURCE`) whose manifest declares `hooks`."""
    section: dict[str, object] = {"summary": f"{plugin_id} test plugin", "kinds": ["connector"]}
    if hooks is not None:
        section["hooks"] = hooks
    return connector_wheel(directory, plugin_id, manifest=manifest_toml({plugin_id: section}), **options)


@pytest.fixture
def keys(tmp_path):
    private, public = generate_signing_key(tmp_path / "author")
    trusted = tmp_path / "keys"
    trusted.mkdir(mode=0o700)
    shutil.copy(public, trusted / public.name)
    return private


def test_a_declaring_plugin_is_admitted_at_load_and_imported_on_its_first_hook_call(
    install, wheel_dir, make_host, marker, audit
):
    install(lazy_wheel(wheel_dir, "acme.lazy", marker=marker))
    host = make_host("warn")

    (info,) = host.load().plugins
    assert (info.state, info.activation_pending, info.signature_status) == (PluginState.ENABLED, True, None)
    assert imported_ids(marker) == []
    assert "acme_lazy" not in sys.modules

    assert host.hook.aperio_finding_raised(finding=FINDING) == ["acme.lazy"]  # the first call reaches it
    assert imported_ids(marker) == ["acme.lazy"]
    info = host.get("acme.lazy")
    assert (info.state, info.activation_pending, info.signature_status) == (
        PluginState.ENABLED,
        False,
        SignatureStatus.UNSIGNED,
    )
    assert host.hook.aperio_finding_raised(finding=FINDING) == ["acme.lazy"]
    assert imported_ids(marker) == ["acme.lazy"]  # imported once
    assert "plugin.activation.pending" in audit.names("acme.lazy")


def test_the_eager_setting_imports_a_declaring_plugin_at_load(install, wheel_dir, make_host, marker):
    install(lazy_wheel(wheel_dir, "acme.lazy", marker=marker))
    host = make_host("warn", settings={"plugin_activation": "eager"})

    (info,) = host.load().plugins
    assert (info.state, info.activation_pending) == (PluginState.ENABLED, False)
    assert imported_ids(marker) == ["acme.lazy"]


def test_a_plugin_without_a_hooks_declaration_is_imported_at_load(install, wheel_dir, make_host, marker):
    install(lazy_wheel(wheel_dir, "acme.eager", hooks=None, marker=marker))
    host = make_host("warn")

    (info,) = host.load().plugins
    assert (info.state, info.activation_pending) == (PluginState.ENABLED, False)
    assert imported_ids(marker) == ["acme.eager"]


def test_signed_plugin_tampered_after_load_is_refused_at_activation_and_never_runs(
    install, wheel_dir, make_host, marker, keys, plugins_dir
):
    install(sign_wheel_with_key(lazy_wheel(wheel_dir, "acme.signed", marker=marker), keys))
    host = make_host("strict")
    (info,) = host.load().plugins
    assert (info.state, info.activation_pending) == (PluginState.ENABLED, True)

    module = plugins_dir / "acme_signed" / "__init__.py"
    module.write_text(module.read_text() + "\nTAMPERED = True\n")

    assert host.hook.aperio_finding_raised(finding=FINDING) == []  # the call goes on without it
    info = host.get("acme.signed")
    assert (info.state, info.failure_stage, info.signature_status) == (
        PluginState.FAILED,
        FailureStage.VERIFY,
        SignatureStatus.INVALID,
    )
    assert "acme_signed/__init__.py modified" in info.error
    assert imported_ids(marker) == []
    assert host.connectors == {}


def test_signed_plugin_untouched_is_verified_on_first_use(install, wheel_dir, make_host, marker, keys):
    install(sign_wheel_with_key(lazy_wheel(wheel_dir, "acme.signed", marker=marker), keys))
    host = make_host("strict")
    host.load()

    assert list(host.connectors) == ["acme_signed"]  # the catalog activates the plugins that fill it
    info = host.get("acme.signed")
    assert (info.state, info.signature_status, info.activation_pending) == (
        PluginState.ENABLED,
        SignatureStatus.VERIFIED,
        False,
    )
    assert imported_ids(marker) == ["acme.signed"]


def test_unsigned_plugin_in_strict_is_refused_at_load_not_deferred(install, wheel_dir, make_host, marker):
    install(lazy_wheel(wheel_dir, "acme.unsigned", marker=marker))
    host = make_host("strict")

    (info,) = host.load().plugins
    assert (info.state, info.failure_stage, info.signature_status) == (
        PluginState.FAILED,
        FailureStage.VERIFY,
        SignatureStatus.UNSIGNED,
    )
    assert not info.activation_pending
    assert imported_ids(marker) == []


@pytest.mark.parametrize(
    ("declared", "fragment"),
    [
        (["aperio_finding_raised"], "implements aperio_register_connectors, which its manifest's hooks do not list"),
        ([*HOOKS, "aperio_host_shutdown"], "list aperio_host_shutdown, which it does not implement"),
    ],
    ids=["undeclared_hook", "declared_hook_not_implemented"],
)
@pytest.mark.parametrize("activation", ["lazy", "eager"])
def test_a_hooks_declaration_that_does_not_match_the_module_is_refused(
    install, wheel_dir, make_host, declared, fragment, activation
):
    install(lazy_wheel(wheel_dir, "acme.liar", hooks=declared))
    host = make_host("warn", settings={"plugin_activation": activation})
    host.load()

    assert host.hook.aperio_finding_raised(finding=FINDING) == []
    info = host.get("acme.liar")
    assert (info.state, info.failure_stage) == (PluginState.FAILED, FailureStage.REGISTER)
    assert "hooks declaration does not match the module" in info.error
    assert fragment in info.error


def test_a_malformed_hook_name_in_the_manifest_is_refused_at_inspect(install, wheel_dir, make_host, marker):
    install(lazy_wheel(wheel_dir, "acme.badname", hooks=["Not-A-Hook"], marker=marker))
    host = make_host("warn")

    (info,) = host.load().plugins
    assert (info.state, info.failure_stage) == (PluginState.FAILED, FailureStage.INSPECT)
    assert "hooks" in info.error
    assert imported_ids(marker) == []


def test_run_activates_the_plugin_and_catalog_clashes_resolve_as_at_an_eager_load(install, wheel_dir, make_host):
    # Both register connector "shared"; the first on the search path wins, whichever is run first.
    install(lazy_wheel(wheel_dir / "a", "acme.first", package="acme_first", connector="shared"))
    install(lazy_wheel(wheel_dir / "b", "acme.second", package="acme_second", connector="shared"))
    host = make_host("warn")
    host.load()

    with pytest.raises(LifecycleError):
        host.run("acme.second", SyncRequest(connector="shared"))
    assert host.get("acme.second").state is PluginState.FAILED
    assert "already registered by plugin 'acme.first'" in host.get("acme.second").error
    assert host.run("acme.first", SyncRequest(connector="shared")).connector == "shared"


def test_a_disabled_pending_plugin_is_never_imported_until_enabled(install, wheel_dir, make_host, marker):
    install(lazy_wheel(wheel_dir, "acme.lazy", marker=marker))
    host = make_host("warn")
    host.load()

    host.disable("acme.lazy")
    assert host.hook.aperio_finding_raised(finding=FINDING) == []
    assert host.connectors == {}
    assert imported_ids(marker) == []
    host.enable("acme.lazy")
    assert imported_ids(marker) == ["acme.lazy"]
    assert host.hook.aperio_finding_raised(finding=FINDING) == ["acme.lazy"]


def test_verify_pending_reports_a_tampered_plugin_without_importing_anything(
    install, wheel_dir, make_host, marker, keys, plugins_dir
):
    install(sign_wheel_with_key(lazy_wheel(wheel_dir, "acme.signed", marker=marker), keys))
    install(sign_wheel_with_key(lazy_wheel(wheel_dir / "ok", "acme.fine", marker=marker), keys))
    host = make_host("strict")
    host.load()
    module = plugins_dir / "acme_signed" / "__init__.py"
    module.write_text(module.read_text() + "\n# tampered\n")

    infos = {info.id: info for info in host.verify_pending().plugins}
    assert (infos["acme.signed"].state, infos["acme.signed"].signature_status) == (
        PluginState.FAILED,
        SignatureStatus.INVALID,
    )
    assert (infos["acme.fine"].state, infos["acme.fine"].signature_status, infos["acme.fine"].activation_pending) == (
        PluginState.ENABLED,
        SignatureStatus.VERIFIED,
        True,
    )
    assert imported_ids(marker) == []


def test_a_pending_plugin_is_not_imported_to_be_told_of_shutdown(install, wheel_dir, make_host, marker):
    install(
        lazy_wheel(
            wheel_dir,
            "acme.lazy",
            marker=marker,
            hooks=[*HOOKS, "aperio_host_shutdown"],
            extra_source="\n@hookimpl\ndef aperio_host_shutdown():\n    pass\n",
        )
    )
    host = make_host("warn")
    host.load()
    host.close()
    assert imported_ids(marker) == []


def test_a_manifest_hooks_list_must_be_names():
    from aperio_plugins._manifest import manifest_sections

    with pytest.raises(ManifestError, match="hooks"):
        manifest_sections(
            b'manifest_version = 1\n[plugins."a.b"]\nsummary = "s"\nkinds = ["connector"]\nhooks = [1]\n', "m"
        )


def test_looking_at_a_pending_hooks_implementations_activates_its_plugins(install, wheel_dir, make_host, marker):
    install(lazy_wheel(wheel_dir, "acme.lazy", marker=marker))
    host = make_host("warn")
    host.load()
    assert "aperio_finding_raised" in dir(host.hook)

    assert [impl.plugin_name for impl in host.hook.aperio_finding_raised.get_hookimpls()] == ["acme.lazy"]
    assert imported_ids(marker) == ["acme.lazy"]


def test_the_plugins_directory_is_scanned_at_first_evaluation_not_at_a_load_of_pending_plugins(
    install, wheel_dir, make_host, marker, audit, plugins_dir
):
    install(lazy_wheel(wheel_dir, "acme.lazy", marker=marker))
    (plugins_dir / "stray_module.py").write_text("raise SystemExit('never imported')\n")  # owned by no RECORD
    host = make_host("warn")

    host.load()
    assert "host.trust.problem" not in audit.names()  # no RECORD was read: every plugin is pending
    assert imported_ids(marker) == []

    # The first activation evaluates the plugin, which reads the ownership and reports the stray file once.
    assert host.hook.aperio_finding_raised(finding=FINDING) == ["acme.lazy"]
    reasons = [fields["reason"] for fields in audit.fields_of("host.trust.problem")]
    assert sum("stray_module.py" in reason for reason in reasons) == 1
    assert any("stray_module.py" in problem.message for problem in host.plugins_dir_problems)
    assert [fields["reason"] for fields in audit.fields_of("host.trust.problem")] == reasons  # reported once


def test_plugins_dir_problems_reads_the_ownership_of_a_discovery_whose_plugins_are_all_pending(
    install, wheel_dir, make_host, marker, plugins_dir
):
    install(lazy_wheel(wheel_dir, "acme.lazy", marker=marker))
    (plugins_dir / "stray_module.py").write_text("raise SystemExit('never imported')\n")
    host = make_host("warn")
    host.load()

    assert any("stray_module.py" in problem.message for problem in host.plugins_dir_problems)
    assert imported_ids(marker) == []  # reading the ownership imports nothing
    assert host.get("acme.lazy").activation_pending
