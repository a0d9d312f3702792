"""Small things every `aperio` user meets: --version names the plugin API, shell completion offers
installed plugin ids, and `install` of a path that is not a wheel says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_builders import connector_wheel

import aperio_hookspecs
from aperio_plugins.testing import install_wheels

APERIO = str(Path(sys.executable).with_name("aperio"))


@pytest.fixture
def run(tmp_path):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {key: value for key, value in os.environ.items() if key != "APERIO_REGISTRY_INDEX"}
        environment.update(
            APERIO_PLUGINS_DIR=str(tmp_path / "plugins"),
            APERIO_STATE_DIR=str(tmp_path / "state"),
            APERIO_PLUGIN_TRUSTED_KEYS_DIR=str(tmp_path / "trusted"),
            **env,
        )
        return subprocess.run(
            [APERIO, *args], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=60, check=False
        )

    return run


def test_version_names_the_plugin_api(run):
    result = run("--version")

    assert result.returncode == 0
    assert result.stdout.strip().endswith(f"(plugin API {aperio_hookspecs.API_VERSION})")


def test_completion_offers_installed_plugin_ids(run, tmp_path):
    install_wheels([connector_wheel(tmp_path / "dist", "acme.complete-me")], target=tmp_path / "plugins")

    result = run(
        "plugin",
        "info",
        "acme.comp",
        _APERIO_COMPLETE="bash_complete",
        COMP_WORDS="aperio plugin info acme.comp",
        COMP_CWORD="3",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,acme.complete-me"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: (root / "notes.txt").write_text("hello") and "notes.txt", "notes.txt is a file but not a wheel"),
        (lambda root: (root / "project").mkdir() or "project", "project is a folder, not a wheel"),
    ],
    ids=["text_file", "project_folder"],
)
def test_install_of_a_path_that_is_no_wheel_says_so(run, tmp_path, make, message):
    spec = make(tmp_path)

    result = run("plugin", "install", spec)

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {message}")
    assert "no plugin index configured" not in result.stderr
    assert not (tmp_path / "plugins").exists()


# Rendered in a child process: importing click into the test process would change what later
# in-process tests see (a plugin's `import click` would be served from sys.modules).
_RENDER = """
import io, json, sys
from rich.console import Console
from aperio_plugins import PluginState, SignatureStatus
from aperio_plugins._model import Isolation, PluginInfo, PluginKind
from aperio_plugins.cli._output import plugin_errors, plugin_table

error = "invalid signature: signature 1 (ed25519): no trusted key verifies the signature " * 2
plugins = [
    PluginInfo(id="aperio.box-remediation", state=PluginState.ENABLED, signature_status=SignatureStatus.VERIFIED,
               version="1.0.0", kinds=(PluginKind.REMEDIATION,), isolation=Isolation.INPROCESS),
    PluginInfo(id="acme.a-rather-long-plugin-id-for-a-connector", state=PluginState.FAILED,
               signature_status=SignatureStatus.INVALID, version="10.20.30",
               kinds=(PluginKind.CONNECTOR, PluginKind.DESTINATION), error=error),
]
out = io.StringIO()
Console(width=80, file=out, color_system=None).print(plugin_table(plugins))
json.dump({"table": out.getvalue(), "errors": plugin_errors(plugins), "error": error}, sys.stdout)
"""


def test_the_list_table_fits_80_columns_never_splits_an_id_and_puts_errors_below():
    import json

    rendered = json.loads(
        subprocess.run([sys.executable, "-c", _RENDER], capture_output=True, text=True, check=True).stdout
    )
    lines = rendered["table"].splitlines()

    assert max(len(line) for line in lines) <= 80, rendered["table"]
    for plugin_id in ("aperio.box-remediation", "acme.a-rather-long-plugin-id-for-a-connector"):
        assert any(line.startswith(plugin_id + " ") for line in lines), rendered["table"]
    assert "no trusted key" not in rendered["table"]
    assert rendered["errors"] == [f"acme.a-rather-long-plugin-id-for-a-connector: {rendered['error']}"]
