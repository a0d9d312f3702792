"""`aperio plugin check` and `aperio plugin sign` on wheels a strict host would refuse, as real subprocesses:
every refusal is found before signing, `sign` writes nothing, and `--no-import` runs no plugin code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from plugin_builders import connector_wheel, imported_ids

from aperio_plugins.testing import PluginWheel, generate_signing_key

APERIO = str(Path(sys.executable).with_name("aperio"))


@pytest.fixture
def run(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "APERIO_PLUGINS_DIR": str(tmp_path / "plugins"),
            "APERIO_STATE_DIR": str(tmp_path / "state"),
            "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(tmp_path / "trusted"),
            "APERIO_PLUGIN_TRUST_MODE": "strict",
        }
        return subprocess.run(
            [APERIO, *args], capture_output=True, text=True, env=environment, timeout=120, check=False
        )

    return run


def _hookimpl_source(body: str) -> str:
    return "from aperio_hookspecs import Connector, hookimpl\n\n" + body


def manifest_left_out(directory: Path) -> Path:
    # What setuptools does with a package-data file nobody declared.
    return PluginWheel("acme-x", plugins={"acme.x": "acme_x"}, manifest="", files={"acme_x/__init__.py": ""}).build(
        directory
    )


def manifest_without_the_id(directory: Path) -> Path:
    manifest = 'manifest_version = 1\n\n[plugins."acme.other"]\nsummary = "s"\nkinds = ["connector"]\n'
    return PluginWheel("acme-x", plugins={"acme.x": "acme_x"}, manifest=manifest).build(directory)


def misnamed_hookimpl_argument(directory: Path) -> Path:
    source = _hookimpl_source("@hookimpl\ndef aperio_register_connectors(registrar):\n    pass\n")
    return PluginWheel("acme-x", plugins={"acme.x": "acme_x"}, files={"acme_x/__init__.py": source}).build(directory)


def hookimpl_without_hookspec(directory: Path) -> Path:
    source = _hookimpl_source("@hookimpl\ndef aperio_register_widgets(register):\n    pass\n")
    return PluginWheel("acme-x", plugins={"acme.x": "acme_x"}, files={"acme_x/__init__.py": source}).build(directory)


def registers_the_wrong_type(directory: Path) -> Path:
    source = _hookimpl_source("@hookimpl\ndef aperio_register_connectors(register):\n    register(object())\n")
    return PluginWheel("acme-x", plugins={"acme.x": "acme_x"}, files={"acme_x/__init__.py": source}).build(directory)


def no_hooks_at_all(directory: Path) -> Path:
    return PluginWheel("acme-x", plugins={"acme.x": "acme_x"}, files={"acme_x/__init__.py": "x = 1\n"}).build(directory)


def unbounded_api(directory: Path) -> Path:
    return connector_wheel(directory, "acme.x", requires=["aperio-hookspecs"])


def no_api_requirement(directory: Path) -> Path:
    return connector_wheel(directory, "acme.x", requires=[])


def future_api(directory: Path) -> Path:
    return connector_wheel(directory, "acme.x", requires=["aperio-hookspecs>=2,<3"])


def console_script(directory: Path) -> Path:
    entry_points = "[aperio.plugins]\nacme.x = acme_x\n\n[console_scripts]\nacme = acme_x:main\n"
    return connector_wheel(directory, "acme.x", entry_points_text=entry_points)


def data_directory(directory: Path) -> Path:
    files = {"acme_x/__init__.py": "", "acme_x-1.0.0.data/scripts/run": "#!/bin/sh\n"}
    return PluginWheel("acme-x", plugins={"acme.x": "acme_x"}, files=files).build(directory)


def file_name_contradicts_metadata(directory: Path) -> Path:
    wheel = connector_wheel(directory, "acme.x")
    return wheel.rename(wheel.with_name("acme_x-2.0.0-py3-none-any.whl"))


def stdlib_top_level_name(directory: Path) -> Path:
    return connector_wheel(directory, "acme.x", package="json", distribution="acme-x")


REFUSALS = {
    "manifest_left_out": (manifest_left_out, "manifest", "acme_x/aperio-plugin.toml is not in the wheel"),
    "manifest_without_the_id": (manifest_without_the_id, "manifest", 'no [plugins."acme.x"] table'),
    "misnamed_hookimpl_argument": (misnamed_hookimpl_argument, "hookimpls", "registrar"),
    "hookimpl_without_hookspec": (hookimpl_without_hookspec, "hookimpls", "aperio_register_widgets"),
    "registers_the_wrong_type": (registers_the_wrong_type, "hookimpls", "which is not a Connector"),
    "no_hooks_at_all": (no_hooks_at_all, "hookimpls", "implements no hook of the plugin API"),
    "unbounded_api": (unbounded_api, "api", "has no version bound"),
    "no_api_requirement": (no_api_requirement, "api", "declares no requirement on aperio-hookspecs"),
    "future_api": (future_api, "api", "major versions differ"),
    "console_script": (console_script, "entry points", "declares console_scripts"),
    "data_directory": (data_directory, "wheel", ".data directory"),
    "file_name_contradicts_metadata": (file_name_contradicts_metadata, "wheel", "2.0.0"),
    "stdlib_top_level_name": (stdlib_top_level_name, "layout", "collides with 'json' of the standard library"),
}


@pytest.mark.parametrize("fault", sorted(REFUSALS))
def test_check_finds_what_a_strict_host_refuses_and_sign_signs_nothing(fault, run, tmp_path):
    build, check_name, message = REFUSALS[fault]
    wheel = build(tmp_path / "dist")
    private_key, _ = generate_signing_key(tmp_path / "keys", "author")

    checked = run("plugin", "check", str(wheel), "--json")
    report = json.loads(checked.stdout)
    before = wheel.read_bytes()
    signed = run("plugin", "sign", str(wheel), "--key", str(private_key))

    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert report["ok"] is False
    assert any(p["check"] == check_name and message in p["message"] for p in report["problems"]), report["problems"]
    assert signed.returncode == 1
    assert signed.stderr.startswith(f"error: {wheel.name}: not signed, a strict host would refuse it:")
    assert message in signed.stderr
    assert "Traceback" not in signed.stderr
    assert wheel.read_bytes() == before


def test_check_reports_every_problem_at_once(run, tmp_path):
    wheel = connector_wheel(tmp_path / "dist", "acme.x", manifest="", requires=["aperio-hookspecs"])

    report = json.loads(run("plugin", "check", str(wheel), "--json").stdout)

    assert sorted(p["check"] for p in report["problems"]) == ["api", "manifest"]


def test_a_good_wheel_passes_and_is_signed_verified(run, tmp_path):
    wheel = connector_wheel(tmp_path / "dist", "acme.x")
    private_key, public_key = generate_signing_key(tmp_path / "keys", "author")
    (tmp_path / "trusted").mkdir(mode=0o700)
    (tmp_path / "trusted" / public_key.name).write_bytes(public_key.read_bytes())

    checked = run("plugin", "check", str(wheel))
    signed = run("plugin", "sign", str(wheel), "--key", str(private_key))
    verified = run("plugin", "verify", str(wheel))
    after = json.loads(run("plugin", "check", str(wheel), "--json").stdout)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "acme.x = acme_x  (hooks: aperio_finding_raised, aperio_register_connectors)" in checked.stdout
    assert "a strict host would accept it once signed; signature: unsigned" in checked.stdout
    assert signed.returncode == 0, signed.stderr
    assert verified.returncode == 0, verified.stdout
    assert (after["ok"], after["signature"]) == (True, "verified")


def test_no_import_checks_without_running_plugin_code(run, tmp_path):
    marker = tmp_path / "marker"
    wheel = connector_wheel(tmp_path / "dist", "acme.x", marker=marker)

    without = run("plugin", "check", str(wheel), "--no-import")
    assert without.returncode == 0, without.stdout + without.stderr
    assert imported_ids(marker) == []

    with_import = run("plugin", "check", str(wheel))
    assert with_import.returncode == 0, with_import.stdout + with_import.stderr
    assert imported_ids(marker) == ["acme.x"]


def test_a_file_changed_after_signing_is_a_problem(run, tmp_path):
    wheel = connector_wheel(tmp_path / "dist", "acme.x")
    private_key, public_key = generate_signing_key(tmp_path / "keys", "author")
    assert run("plugin", "sign", str(wheel), "--key", str(private_key)).returncode == 0
    (tmp_path / "trusted").mkdir(mode=0o700)
    (tmp_path / "trusted" / public_key.name).write_bytes(public_key.read_bytes())
    tampered = PluginWheel("acme-x", plugins={"acme.x": "acme_x"}, files={"acme_x/__init__.py": "x = 2\n"})
    with zipfile.ZipFile(wheel) as archive:
        signature = {n: archive.read(n) for n in archive.namelist() if n.endswith("aperio-signature.json")}
    tampered.files = {**tampered.files, **signature}
    rebuilt = tampered.build(tmp_path / "tampered")

    report = json.loads(run("plugin", "check", str(rebuilt), "--json", "--no-import").stdout)

    assert report["signature"] == "invalid"
    assert [p["check"] for p in report["problems"]] == ["signature"]


def test_check_of_a_folder_that_is_not_a_project_says_so(run, tmp_path):
    result = run("plugin", "check", str(tmp_path))

    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: {tmp_path}: no pyproject.toml: not a Python project (aperio plugin init makes one)"
    )
