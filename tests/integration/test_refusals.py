"""Every refusal path of the pipeline, in one environment of broken plugins next to a good one.

Each case is named after the fault. The good plugin must stay enabled whatever
its neighbours do, and plugins refused before import must not have run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_builders import MARKER_PREFIX, connector_wheel, imported_ids

from aperio_hookspecs import API_VERSION
from aperio_plugins import FailureStage, PluginState
from aperio_plugins.testing import PluginWheel, install_wheels, manifest_toml

HOOKS = "from aperio_hookspecs import hookimpl, Connector, Destination, SyncResult, DeliveryReceipt\n"

VALID_SECTION = {"summary": "test", "kinds": ["connector"]}


def _plugin(name: str, source: str = "", **options: object) -> PluginWheel:
    package = name.replace("-", "_")
    plugin_id = f"acme.{name}"
    options.setdefault("plugins", {plugin_id: package})
    return PluginWheel(f"acme-{name}", files={f"{package}/__init__.py": source}, **options)  # type: ignore[arg-type]


def _faults(marker: Path) -> dict[str, PluginWheel]:
    def marked(plugin_id: str, body: str) -> str:
        return MARKER_PREFIX.format(marker=str(marker), plugin_id=plugin_id) + HOOKS + body

    def section(name: str, **fields: object) -> str:
        return manifest_toml({f"acme.{name}": {**VALID_SECTION, **fields}})

    return {
        "import_error": _plugin("import-error", "import module_that_does_not_exist\n"),
        "raises_at_import": _plugin("raises-at-import", "raise RuntimeError('configured wrong')\n"),
        "exits_at_import": _plugin("exits-at-import", "raise SystemExit(3)\n"),
        "manifest_bad_kind": _plugin(
            "manifest-bad-kind",
            marked("acme.manifest-bad-kind", ""),
            manifest=section("manifest-bad-kind", kinds=["conector"]),
        ),
        "manifest_unknown_key": _plugin(
            "manifest-unknown-key",
            marked("acme.manifest-unknown-key", ""),
            manifest=section("manifest-unknown-key", permissions=["all"]),
        ),
        "manifest_missing": _plugin("manifest-missing", marked("acme.manifest-missing", ""), manifest=""),
        "manifest_not_toml": _plugin("manifest-not-toml", marked("acme.manifest-not-toml", ""), manifest="kinds = [\n"),
        "manifest_other_id": _plugin(
            "manifest-other-id",
            marked("acme.manifest-other-id", ""),
            manifest=manifest_toml({"acme.other": VALID_SECTION}),
        ),
        "manifest_from_the_future": _plugin(
            "manifest-future",
            marked("acme.manifest-future", ""),
            manifest=section("manifest-future").replace("manifest_version = 1", "manifest_version = 2"),
        ),
        "entry_point_missing_attribute": _plugin(
            "missing-attr", HOOKS, plugins={"acme.missing-attr": "missing_attr:not_there"}
        ),
        "entry_point_malformed": _plugin("malformed-ep", HOOKS, plugins={"acme.malformed-ep": "malformed_ep:1bad"}),
        "hookimpl_signature_mismatch": _plugin(
            "sig-mismatch", HOOKS + "@hookimpl\ndef aperio_finding_raised(finding, severity_override):\n    pass\n"
        ),
        "hookimpl_unknown_hook": _plugin(
            "unknown-hook", HOOKS + "@hookimpl\ndef aperio_finding_raisd(finding):\n    pass\n"
        ),
        "registers_wrong_type": _plugin(
            "wrong-type", HOOKS + "@hookimpl\ndef aperio_register_connectors(register):\n    register(object())\n"
        ),
        "registers_undeclared_kind": _plugin(
            "undeclared-kind",
            HOOKS
            + "class D(Destination):\n    name = 'undeclared'\n"
            + "    def deliver(self, context, batch):\n        return DeliveryReceipt(destination='undeclared')\n"
            + "@hookimpl\ndef aperio_register_destinations(register):\n    register(D())\n",
        ),
        "registration_hook_raises": _plugin(
            "register-raises",
            HOOKS + "@hookimpl\ndef aperio_register_connectors(register):\n    raise KeyError('token')\n",
        ),
        "no_api_requirement": _plugin("no-api", marked("acme.no-api", ""), requires=()),
        "api_requirement_behind_extra": _plugin(
            "api-extra", marked("acme.api-extra", ""), requires=('aperio-hookspecs>=1.0,<2; extra == "test"',)
        ),
        "api_unbounded": _plugin("api-unbounded", marked("acme.api-unbounded", ""), requires=("aperio-hookspecs",)),
        "api_major_ahead": _plugin("api-major", marked("acme.api-major", ""), requires=("aperio-hookspecs>=2.0,<3",)),
        "api_minor_ahead": _plugin("api-minor", marked("acme.api-minor", ""), requires=("aperio-hookspecs>=1.5,<2",)),
        "unreadable_entry_points": _plugin("bad-entry-points", ""),
    }


CASES = {
    "import_error": (FailureStage.LOAD, "import failed: ModuleNotFoundError"),
    "raises_at_import": (FailureStage.LOAD, "RuntimeError: configured wrong"),
    "exits_at_import": (FailureStage.LOAD, "import failed: SystemExit: 3"),
    "manifest_bad_kind": (
        FailureStage.INSPECT,
        'aperio-plugin.toml: plugins."acme.manifest-bad-kind".kinds[0]: Input should be',
    ),
    "manifest_unknown_key": (
        FailureStage.INSPECT,
        'plugins."acme.manifest-unknown-key".permissions: Extra inputs are not permitted',
    ),
    "manifest_missing": (FailureStage.INSPECT, "no manifest: expected manifest_missing/aperio-plugin.toml"),
    "manifest_not_toml": (FailureStage.INSPECT, "aperio-plugin.toml: not valid TOML"),
    "manifest_other_id": (FailureStage.INSPECT, 'no [plugins."acme.manifest-other-id"] table (declared: acme.other)'),
    "manifest_from_the_future": (FailureStage.INSPECT, "manifest_version 2 is newer than this host understands (1)"),
    "entry_point_missing_attribute": (FailureStage.LOAD, "missing_attr has no attribute 'not_there'"),
    "entry_point_malformed": (FailureStage.LOAD, "malformed entry point value 'malformed_ep:1bad'"),
    "hookimpl_signature_mismatch": (FailureStage.REGISTER, "hookimpl does not match its spec"),
    "hookimpl_unknown_hook": (FailureStage.REGISTER, "implements 'aperio_finding_raisd', which is not a hook"),
    "registers_wrong_type": (FailureStage.REGISTER, "registered object as a connector, but it is not a Connector"),
    "registers_undeclared_kind": (
        FailureStage.REGISTER,
        "registers a destination (undeclared) but its manifest declares kinds [connector]",
    ),
    "registration_hook_raises": (FailureStage.REGISTER, "aperio_register_connectors raised KeyError"),
    "no_api_requirement": (FailureStage.INSPECT, "declares no requirement on aperio-hookspecs"),
    "api_requirement_behind_extra": (FailureStage.INSPECT, "declares no requirement on aperio-hookspecs"),
    "api_unbounded": (FailureStage.ADMIT, "has no version bound"),
    "api_major_ahead": (
        FailureStage.ADMIT,
        f"built for plugin API 2.x (requires aperio-hookspecs<3,>=2.0) but this host provides plugin API {API_VERSION}",
    ),
    "api_minor_ahead": (
        FailureStage.ADMIT,
        f"requires aperio-hookspecs<2,>=1.5 but this host provides plugin API {API_VERSION}",
    ),
}
NOT_IMPORTED = [name for name, (stage, _) in CASES.items() if stage in (FailureStage.INSPECT, FailureStage.ADMIT)]


@pytest.fixture(scope="module")
def broken_environment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("broken")
    marker = root / "imported.txt"
    wheels = [wheel.build(root / "wheels") for wheel in _faults(marker).values()]
    wheels.append(connector_wheel(root / "wheels", "acme.good", marker=marker))
    install_wheels(wheels, target=root / "plugins")
    # pip refuses a wheel with a malformed entry_points.txt, so corrupt one on disk, as a bad edit would.
    corrupted = root / "plugins" / "acme_bad_entry_points-1.0.0.dist-info" / "entry_points.txt"
    corrupted.write_text("[aperio.plugins]\nthis line is not an entry point\n")
    return root / "plugins", marker


@pytest.fixture
def loaded(broken_environment, make_host):
    plugins, marker = broken_environment
    host = make_host(plugins_dir=plugins)
    report = host.load()
    return host, {info.id: info for info in report.plugins}, marker


@pytest.mark.parametrize("fault", list(CASES))
def test_broken_plugin_fails_with_its_reason_and_the_good_one_still_runs(loaded, fault):
    host, infos, _ = loaded
    stage, message = CASES[fault]
    info = infos[_plugin_id(fault)]
    assert info.state is PluginState.FAILED
    assert info.failure_stage is stage
    assert message in info.error
    assert infos["acme.good"].state is PluginState.ENABLED
    assert host.connectors["acme_good"].plugin_id == "acme.good"


@pytest.mark.parametrize("fault", NOT_IMPORTED)
def test_plugins_refused_before_import_never_ran(loaded, fault):
    _, _, marker = loaded
    ran = imported_ids(marker)
    assert "acme.good" in ran
    assert _plugin_id(fault) not in ran


def test_incompatible_plugins_get_their_own_audit_event(loaded, audit):
    incompatible = {fields["plugin_id"] for fields in audit.fields_of("plugin.incompatible")}
    assert incompatible == {"acme.api-unbounded", "acme.api-major", "acme.api-minor"}


def test_unreadable_entry_points_are_reported_not_fatal(loaded, audit):
    host, _, _ = loaded
    assert any("acme_bad_entry_points" in problem for problem in host.broken_distributions)
    assert audit.fields_of("plugin.discovery.failed")[0]["reason"].startswith("unreadable entry_points.txt")


def _plugin_id(fault: str) -> str:
    names = {
        "import_error": "import-error",
        "raises_at_import": "raises-at-import",
        "exits_at_import": "exits-at-import",
        "manifest_bad_kind": "manifest-bad-kind",
        "manifest_unknown_key": "manifest-unknown-key",
        "manifest_missing": "manifest-missing",
        "manifest_not_toml": "manifest-not-toml",
        "manifest_other_id": "manifest-other-id",
        "manifest_from_the_future": "manifest-future",
        "entry_point_missing_attribute": "missing-attr",
        "entry_point_malformed": "malformed-ep",
        "hookimpl_signature_mismatch": "sig-mismatch",
        "hookimpl_unknown_hook": "unknown-hook",
        "registers_wrong_type": "wrong-type",
        "registers_undeclared_kind": "undeclared-kind",
        "registration_hook_raises": "register-raises",
        "no_api_requirement": "no-api",
        "api_requirement_behind_extra": "api-extra",
        "api_unbounded": "api-unbounded",
        "api_major_ahead": "api-major",
        "api_minor_ahead": "api-minor",
    }
    return "acme." + names[fault]
