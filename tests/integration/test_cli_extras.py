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
