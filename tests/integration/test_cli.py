"""The `aperio` command, run as a real subprocess against real installed plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_builders import connector_wheel, imported_ids

from aperio_plugins.testing import PluginWheel

APERIO = str(Path(sys.executable).with_name("aperio"))


@pytest.fixture
def aperio(tmp_path, plugins_dir):
    def aperio(*args: str, trust: str = "warn", **env: str) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "APERIO_PLUGINS_DIR": str(plugins_dir),
            "APERIO_STATE_DIR": str(tmp_path / "state"),
            "APERIO_PLUGIN_TRUST_MODE": trust,
            **env,
        }
        return subprocess.run([APERIO, *args], capture_output=True, text=True, env=environment, timeout=60, check=False)

    return aperio


@pytest.fixture
def installed(install, wheel_dir, marker):
    broken = PluginWheel(
        "acme-broken",
        plugins={"acme.broken": "acme_broken"},
        files={"acme_broken/__init__.py": "import not_installed_anywhere\n"},
    )
    install(
        connector_wheel(wheel_dir, "acme.conn", marker=marker),
        connector_wheel(wheel_dir, "acme.dest", kinds=("destination",), marker=marker, package="acme_dest"),
        broken.build(wheel_dir),
    )


def _mine(rows):
    # The test's own plugins directory: whatever the environment running the suite has installed is not ours.
    return {row["id"]: row for row in rows if row["origin"] == "plugins_dir"}


def test_list_json_has_one_object_per_plugin_with_the_promised_fields(aperio, installed):
    result = aperio("plugin", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = _mine(json.loads(result.stdout))
    assert set(rows) == {"acme.conn", "acme.dest", "acme.broken"}
    for row in rows.values():
        assert {
            "id",
            "version",
            "distribution",
            "kinds",
            "state",
            "signature_status",
            "api_requirement",
            "error",
        } <= set(row)
    assert rows["acme.conn"]["state"] == "enabled"
    assert rows["acme.conn"]["signature_status"] == "unsigned"
    assert rows["acme.broken"]["state"] == "failed"
    assert "No module named 'not_installed_anywhere'" in rows["acme.broken"]["error"]


def test_list_kind_filters(aperio, installed):
    rows = _mine(json.loads(aperio("plugin", "list", "--json", "--kind", "destination").stdout))
    assert set(rows) == {"acme.dest"}


def test_list_table_is_readable(aperio, installed):
    result = aperio("plugin", "list")
    assert result.returncode == 0
    header = result.stdout.splitlines()[0]
    for column in ("ID", "VERSION", "KINDS", "STATE", "SIGNATURE", "RUNS"):
        assert column in header
    assert any("acme.conn" in line and "enabled" in line for line in result.stdout.splitlines())
    # Errors are on their own line below the table, not in a column that makes it wider.
    assert any(
        line.startswith("acme.broken: ") and "not_installed_anywhere" in line for line in result.stdout.splitlines()
    )


def test_info_says_why_a_plugin_failed(aperio, installed):
    result = aperio("plugin", "info", "acme.broken", "--json")
    assert result.returncode == 0
    info = json.loads(result.stdout)
    assert info["state"] == "failed"
    assert info["failure_stage"] == "load"
    human = aperio("plugin", "info", "acme.broken").stdout
    assert "not_installed_anywhere" in human


def test_disable_persists_imports_nothing_and_enable_brings_it_back(aperio, installed, marker):
    result = aperio("plugin", "disable", "acme.conn")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "acme.conn: disabled"
    assert imported_ids(marker) == []  # disable reads metadata only

    rows = _mine(json.loads(aperio("plugin", "list", "--json").stdout))
    assert rows["acme.conn"]["state"] == "disabled"
    assert "acme.conn" not in imported_ids(marker)

    assert aperio("plugin", "enable", "acme.conn").stdout.strip() == "acme.conn: enabled"
    rows = _mine(json.loads(aperio("plugin", "list", "--json").stdout))
    assert rows["acme.conn"]["state"] == "enabled"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plugin", "info", "acme.nope"), "error: no plugin with id 'acme.nope'"),
        (("plugin", "disable", "acme.nope"), "error: no installed plugin with id 'acme.nope'"),
        (
            ("plugin", "enable", "acme.broken"),
            "error: plugin 'acme.broken' is failed: entry point acme.broken = acme_broken: import failed",
        ),
    ],
)
def test_expected_failures_exit_non_zero_with_one_line_and_no_traceback(aperio, installed, args, message):
    result = aperio(*args)
    assert result.returncode == 1
    first, *named = result.stderr.strip().splitlines()
    assert first.startswith(message)
    assert "Traceback" not in result.stderr
    # Then the diagnostics: which plugin (and distribution, when known) the error is about.
    assert named[0] == f"plugin: {args[-1]}"
    assert all(line.startswith("distribution: ") for line in named[1:])


def test_invalid_configuration_is_one_line(aperio):
    result = aperio("plugin", "list", trust="sometimes")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: invalid configuration: APERIO_PLUGIN_TRUST_MODE='sometimes': Input should be 'strict', 'warn' or 'disabled'"
    )


def test_corrupted_state_store_is_one_line(aperio, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.sqlite3").write_bytes(b"garbage" * 1000)
    result = aperio("plugin", "list")
    assert result.returncode == 1
    assert "state.sqlite3 is unreadable" in result.stderr
    assert "Traceback" not in result.stderr


def test_audit_events_go_to_stderr_and_stdout_stays_json(aperio, installed):
    result = aperio("-v", "plugin", "list", "--json")
    json.loads(result.stdout)
    events = [json.loads(line)["event"] for line in result.stderr.splitlines() if line.startswith("{")]
    assert "plugin.loaded" in events
    assert "plugin.load.failed" in events


def test_pydantic_plugins_of_the_environment_are_not_imported_unless_the_operator_asks(aperio, tmp_path, monkeypatch):
    # A distribution on the path that declares a `pydantic` entry point: pydantic imports it when it
    # builds its first model, unless its plugins are off.
    site = tmp_path / "site"
    (site / "pyd_probe-1.0.dist-info").mkdir(parents=True)
    (site / "pyd_probe-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pyd-probe\nVersion: 1.0\n")
    (site / "pyd_probe-1.0.dist-info" / "entry_points.txt").write_text("[pydantic]\nprobe = pyd_probe:plugin\n")
    marker = tmp_path / "pydantic-plugin-imported"
    (site / "pyd_probe.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "class Plugin:\n"
        "    def new_schema_validator(self, *args, **kwargs):\n"
        "        return None, None, None\n"
        "plugin = Plugin()\n"
    )
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS", raising=False)

    listed = aperio("plugin", "list", "--json", PYTHONPATH=str(site))
    assert listed.returncode == 0, listed.stderr
    assert not marker.exists()

    # The operator's own setting wins: with pydantic's plugins on, the same command imports the probe.
    listed = aperio("plugin", "list", "--json", PYTHONPATH=str(site), PYDANTIC_DISABLE_PLUGINS="")
    assert listed.returncode == 0, listed.stderr
    assert marker.exists()
