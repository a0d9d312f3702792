"""The import boundary of the plugins directory, tried as an attacker who can write to it would.

The plugins directory is never on `sys.path`: each distribution's files are served by a finder
scoped to what it owns. Each case is named after the attack; each checks that the planted or
refused code never ran (a marker file), and that a normal plugin beside it still loads.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_builders import connector_wheel, imported_ids

from aperio_plugins import FailureStage, PluginState, SignatureStatus
from aperio_plugins.testing import PluginWheel, generate_signing_key, sign_wheel_with_key
from aperio_plugins.worker import WorkerSettings

# Under bubblewrap a planted module that ran in a worker could not write the marker: its import would
# fail with "Read-only file system" instead of being refused, which the tests' error checks would catch.
PLANTED_SOURCE = "import pathlib\npathlib.Path({marker!r}).open('a').write('{name}\\n')\nVALUE = 1\n"


@pytest.fixture
def sign(tmp_path):
    private, public = generate_signing_key(tmp_path / "author")
    trusted = tmp_path / "keys"
    trusted.mkdir(mode=0o700)
    shutil.copy(public, trusted / public.name)
    return lambda wheel: sign_wheel_with_key(wheel, private)


def plant(plugins_dir: Path, marker: Path) -> None:
    """Drop a module and a package into the plugins directory that no distribution owns."""
    (plugins_dir / "planted_module.py").write_text(PLANTED_SOURCE.format(marker=str(marker), name="planted_module"))
    (plugins_dir / "planted_pkg").mkdir()
    (plugins_dir / "planted_pkg" / "__init__.py").write_text(
        PLANTED_SOURCE.format(marker=str(marker), name="planted_pkg")
    )


def importer_wheel(wheel_dir: Path, plugin_id: str, module: str, marker: Path) -> Path:
    """A plugin whose package imports `module` when it is imported."""
    return connector_wheel(wheel_dir / plugin_id, plugin_id, marker=marker, extra_source=f"\nimport {module}\n")


def plugins_by_id(host):
    return {info.id: info for info in host.load().plugins}


@pytest.mark.parametrize("isolation", ["inprocess", "process"])
@pytest.mark.parametrize("module", ["planted_module", "planted_pkg"])
def test_unowned_module_in_plugins_dir(isolation, module, make_host, install, sign, wheel_dir, plugins_dir, marker):
    install(
        sign(importer_wheel(wheel_dir, "acme.victim", module, marker)),
        sign(connector_wheel(wheel_dir / "normal", "acme.normal", marker=marker)),
    )
    plant(plugins_dir, marker)
    host = make_host(
        "strict",
        settings={"plugin_isolation": isolation},
        worker_settings=WorkerSettings(restart_initial_delay=0.05, restart_max_delay=0.2),
    )
    infos = plugins_by_id(host)

    victim = infos["acme.victim"]
    assert victim.state is PluginState.FAILED
    assert victim.failure_stage is FailureStage.LOAD
    assert module in victim.error
    assert "no installed distribution owns it" in victim.error
    normal = infos["acme.normal"]
    assert (normal.state, normal.signature_status) == (PluginState.ENABLED, SignatureStatus.VERIFIED)
    # The host cannot import it either, and the planted code never ran anywhere.
    with pytest.raises(ModuleNotFoundError, match=f"{module}.*no installed distribution owns it"):
        importlib.import_module(module)
    assert str(plugins_dir) not in sys.path
    assert str(plugins_dir.resolve()) not in sys.path
    ran = imported_ids(marker)
    assert "planted_module" not in ran
    assert "planted_pkg" not in ran
    if isolation == "inprocess":
        assert sorted(ran) == ["acme.normal", "acme.victim"]  # the victim ran up to its import, nothing planted did


def test_unowned_module_is_reported_by_the_host(make_host, install, sign, wheel_dir, plugins_dir, marker, audit):
    install(sign(connector_wheel(wheel_dir, "acme.normal")))
    plant(plugins_dir, marker)
    host = make_host("strict")
    host.load()
    problems = [fields["reason"] for fields in audit.fields_of("host.trust.problem")]
    assert any("planted_module.py" in reason and "planted_pkg/" in reason for reason in problems)
    assert any("planted_pkg/" in str(problem) for problem in host.plugins_dir_problems)


def test_a_file_an_unsigned_plugin_record_does_not_list_is_not_importable(
    make_host, install, wheel_dir, plugins_dir, marker
):
    """In warn an unsigned plugin is served from its RECORD: a module added to its package is not."""
    install(importer_wheel(wheel_dir, "acme.unsigned", "acme_unsigned.added", marker))
    (plugins_dir / "acme_unsigned" / "added.py").write_text(
        PLANTED_SOURCE.format(marker=str(marker), name="planted_module")
    )
    info = plugins_by_id(make_host("warn"))["acme.unsigned"]
    assert info.state is PluginState.FAILED
    assert "acme_unsigned/added.py is not in its RECORD" in info.error
    assert "planted_module" not in imported_ids(marker)


@pytest.mark.parametrize("trust", ["warn", "disabled"])
def test_an_unsigned_plugin_loads_through_its_record_in_warn_and_disabled(
    trust, make_host, install, wheel_dir, plugins_dir, marker
):
    install(connector_wheel(wheel_dir, "acme.unsigned", marker=marker))
    info = plugins_by_id(make_host(trust, environment="development"))["acme.unsigned"]
    assert info.state is PluginState.ENABLED
    assert imported_ids(marker) == ["acme.unsigned"]
    module = sys.modules["acme_unsigned"]
    assert type(module.__spec__.loader).__module__ == "aperio_plugins.importing._loaders"
    assert str(plugins_dir.resolve()) not in sys.path


def helpers_wheel(wheel_dir: Path, marker: Path) -> Path:
    """A distribution that is not a plugin, installed beside one as its dependency."""
    return PluginWheel(
        "acme-helpers",
        plugins={},
        files={"acme_helpers/__init__.py": PLANTED_SOURCE.format(marker=str(marker), name="acme_helpers")},
        entry_points_text="",
    ).build(wheel_dir / "helpers")


def test_unowned_dependency_dist_is_not_importable_in_strict(make_host, install, sign, wheel_dir, plugins_dir, marker):
    install(
        sign(importer_wheel(wheel_dir, "acme.user", "acme_helpers", marker)),
        sign(connector_wheel(wheel_dir / "normal", "acme.normal")),
        helpers_wheel(wheel_dir, marker),
    )
    host = make_host("strict")
    infos = plugins_by_id(host)
    user = infos["acme.user"]
    assert user.state is PluginState.FAILED
    assert "acme_helpers" in user.error
    assert "acme_helpers 1.0.0" in user.error
    assert "strict trust mode does not import it" in user.error
    assert infos["acme.normal"].state is PluginState.ENABLED
    assert "acme_helpers" not in imported_ids(marker)
    assert any(
        "not plugins (unsigned code): acme_helpers 1.0.0" in str(problem) for problem in host.plugins_dir_problems
    )


def test_unowned_dependency_dist_is_importable_and_reported_in_warn(
    make_host, install, sign, wheel_dir, plugins_dir, marker, audit
):
    install(sign(importer_wheel(wheel_dir, "acme.user", "acme_helpers", marker)), helpers_wheel(wheel_dir, marker))
    info = plugins_by_id(make_host("warn"))["acme.user"]
    assert (info.state, info.signature_status) == (PluginState.ENABLED, SignatureStatus.VERIFIED)
    assert imported_ids(marker) == ["acme.user", "acme_helpers"]
    reported = audit.fields_of("plugin.dependency.unsigned")
    assert [(fields["distribution"], fields["importable"]) for fields in reported] == [("acme_helpers 1.0.0", True)]


def test_a_dependency_dist_named_like_a_host_module_never_replaces_it(
    make_host, install, sign, wheel_dir, marker, audit, monkeypatch
):
    """In warn a non-plugin distribution called `click` is still not what `import click` gets."""
    # The audit event below fires when the plugin's `import click` reaches the finders. An earlier test
    # in this process may have imported click already (importing httpx does), which would skip them.
    for name in [name for name in sys.modules if name == "click" or name.startswith("click.")]:
        monkeypatch.delitem(sys.modules, name)
    impostor = PluginWheel(
        "click-impostor",
        plugins={},
        files={"click/__init__.py": PLANTED_SOURCE.format(marker=str(marker), name="click_impostor")},
        entry_points_text="",
    ).build(wheel_dir / "impostor")
    install(sign(importer_wheel(wheel_dir, "acme.user", "click", marker)), impostor)
    info = plugins_by_id(make_host("warn"))["acme.user"]
    assert info.state is PluginState.ENABLED
    assert "click_impostor" not in imported_ids(marker)
    assert "plugins" not in Path(importlib.import_module("click").__file__).parts
    reported = audit.fields_of("plugin.dependency.unsigned")
    assert [
        (fields["importable"], "of distribution click in the host's environment" in fields["reason"])
        for fields in reported
    ] == [(False, True)]


def test_second_dist_info(make_host, install, sign, wheel_dir, plugins_dir, audit):
    install(sign(connector_wheel(wheel_dir, "acme.normal")))
    shutil.copytree(plugins_dir / "acme_normal-1.0.0.dist-info", plugins_dir / "acme_normal-0.9.0.dist-info")
    host = make_host("strict")
    host.load()
    problems = [str(problem) for problem in host.plugins_dir_problems]
    assert any("2 .dist-info directories" in p and "acme_normal-0.9.0.dist-info" in p for p in problems)
    assert any("acme_normal-0.9.0.dist-info" in fields["reason"] for fields in audit.fields_of("host.trust.problem"))


@pytest.mark.parametrize("package", ["shlex", "json"])
def test_stdlib_shadowing_plugin(package, make_host, install, sign, wheel_dir, marker):
    original = importlib.import_module(package)
    install(sign(connector_wheel(wheel_dir, "acme.shadow", package=package, marker=marker)))
    info = plugins_by_id(make_host("strict"))["acme.shadow"]
    assert info.state is PluginState.FAILED
    assert info.failure_stage is FailureStage.ADMIT
    assert f"top-level module {package!r} collides with {package!r} of the standard library" in info.error
    assert imported_ids(marker) == []
    assert sys.modules[package] is original


@pytest.mark.parametrize("package", ["structlog", "click"])
def test_host_dependency_shadowing_plugin(package, make_host, install, sign, wheel_dir, marker, audit):
    install(
        sign(connector_wheel(wheel_dir, "acme.shadow", package=package, marker=marker)),
        sign(connector_wheel(wheel_dir / "normal", "acme.normal")),
    )
    infos = plugins_by_id(make_host("strict"))
    shadow = infos["acme.shadow"]
    assert shadow.state is PluginState.FAILED
    assert shadow.failure_stage is FailureStage.ADMIT
    assert f"collides with {package!r} of distribution {package} in the host's environment" in shadow.error
    assert infos["acme.normal"].state is PluginState.ENABLED
    assert imported_ids(marker) == []
    assert "plugin.collision" in audit.names("acme.shadow")
    module = importlib.import_module(package)
    assert "plugins" not in Path(module.__file__).parts


def test_plugin_vs_plugin_collision(make_host, install, sign, wheel_dir, marker):
    one = connector_wheel(wheel_dir / "one", "acme.one", package="acme_shared", distribution="acme-one", marker=marker)
    two = PluginWheel(
        "acme-two",
        plugins={"acme.two": "acme_two"},
        files={
            "acme_two/__init__.py": "from aperio_hookspecs import hookimpl\n",
            # The same import name as the first plugin's package, as a module (pip installs both).
            "acme_shared.py": PLANTED_SOURCE.format(marker=str(marker), name="acme_shared_of_two"),
        },
    ).build(wheel_dir / "two")
    install(sign(one), sign(two))
    infos = plugins_by_id(make_host("strict"))
    for plugin_id, other in (("acme.one", "acme_two 1.0.0"), ("acme.two", "acme_one 1.0.0")):
        assert infos[plugin_id].state is PluginState.FAILED
        assert infos[plugin_id].failure_stage is FailureStage.ADMIT
        assert f"'acme_shared' collides with 'acme_shared' of plugin {other} in the plugins directory" in (
            infos[plugin_id].error
        )
    assert imported_ids(marker) == []


def test_doctor_lists_unowned_files_and_a_second_dist_info(install, sign, wheel_dir, plugins_dir, marker, tmp_path):
    install(sign(connector_wheel(wheel_dir, "acme.normal")))
    plant(plugins_dir, marker)
    shutil.copytree(plugins_dir / "acme_normal-1.0.0.dist-info", plugins_dir / "acme_normal-0.9.0.dist-info")
    environment = {
        **os.environ,
        "APERIO_PLUGINS_DIR": str(plugins_dir),
        "APERIO_STATE_DIR": str(tmp_path / "state"),
        "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(tmp_path / "keys"),
        "APERIO_PLUGIN_TRUSTED_IDENTITIES": str(tmp_path / "identities.toml"),
        "APERIO_PLUGIN_TRUST_MODE": "strict",
    }
    aperio = str(Path(sys.executable).with_name("aperio"))
    doctor = subprocess.run([aperio, "doctor"], capture_output=True, text=True, env=environment, timeout=60)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "files that no installed distribution owns" in doctor.stdout
    assert "planted_module.py" in doctor.stdout
    assert "planted_pkg/" in doctor.stdout
    assert "acme_normal-0.9.0.dist-info" in doctor.stdout
    listed = subprocess.run([aperio, "plugin", "list"], capture_output=True, text=True, env=environment, timeout=60)
    assert "planted_pkg/" in listed.stderr
    assert "acme_normal-0.9.0.dist-info" in listed.stderr
    assert imported_ids(marker) == []

    for entry in ("planted_module.py", "planted_pkg", "acme_normal-0.9.0.dist-info"):
        path = plugins_dir / entry
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    clean = subprocess.run([aperio, "doctor"], capture_output=True, text=True, env=environment, timeout=60)
    assert clean.returncode == 0, clean.stdout
