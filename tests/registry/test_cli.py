"""`aperio plugin install|remove|search|versions|lock` and `aperio registry validate|add`, run as real commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_builders import connector_wheel
from tree_snapshot import snapshot

APERIO = str(Path(sys.executable).with_name("aperio"))


@pytest.fixture
def aperio(make_settings):
    settings = make_settings()

    def aperio(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {
            **os.environ,
            "APERIO_PLUGINS_DIR": str(settings.plugins_dir),
            "APERIO_STATE_DIR": str(settings.state_dir),
            "APERIO_PLUGIN_TRUST_MODE": "strict",
            "APERIO_PLUGIN_TRUSTED_KEYS_DIR": str(settings.plugin_trusted_keys_dir),
            "APERIO_PLUGIN_TRUSTED_IDENTITIES": str(settings.plugin_trusted_identities),
            "APERIO_REGISTRY_INDEX": str(settings.registry_index),
            "APERIO_REGISTRY_CA_BUNDLE": str(settings.registry_ca_bundle),
            **env,
        }
        return subprocess.run(
            [APERIO, *args], capture_output=True, text=True, env=environment, timeout=120, check=False
        )

    return aperio


@pytest.fixture
def published(registry, sign, wheel_dir):
    registry.publish(sign(connector_wheel(wheel_dir, "acme.alpha", distribution="acme-alpha", version="1.0.0")))
    registry.publish(sign(connector_wheel(wheel_dir, "acme.alpha", distribution="acme-alpha", version="1.1.0")))
    registry.publish(connector_wheel(wheel_dir, "acme.siem", distribution="acme-siem", kinds=("destination",)))
    return registry


def test_install_then_list_then_remove(published, aperio, plugins_dir):
    installed = aperio("plugin", "install", "acme.alpha")
    assert installed.returncode == 0, installed.stderr
    assert "installed acme.alpha: acme-alpha 1.1.0 from https://127.0.0.1:" in installed.stdout
    assert "signed by ed25519 key" in installed.stdout
    assert "\x1b[" not in installed.stderr  # no progress bar when not attached to a terminal

    listed = json.loads(aperio("plugin", "list", "--json").stdout)
    mine = {row["id"]: row for row in listed if row["origin"] == "plugins_dir"}  # not the environment's
    assert mine["acme.alpha"]["state"] == "enabled"
    assert mine["acme.alpha"]["signature_status"] == "verified"

    removed = aperio("plugin", "remove", "acme.alpha")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == "removed acme.alpha: acme-alpha 1.1.0"
    assert not list(plugins_dir.glob("*.dist-info"))


def test_remove_of_a_plugin_that_is_not_installed_fails(aperio):
    result = aperio("plugin", "remove", "acme.ghost")
    assert result.returncode == 1
    assert result.stderr.startswith("error: acme.ghost is not installed in")


def test_a_refused_install_is_one_line_and_writes_nothing(published, aperio, plugins_dir):
    before = snapshot(plugins_dir)
    result = aperio("plugin", "install", "acme.siem")
    assert result.returncode == 1
    assert result.stderr.startswith("error: acme.siem 1.0.0: unsigned plugin refused in strict trust mode")
    assert "Traceback" not in result.stderr
    assert snapshot(plugins_dir) == before


def test_search_and_versions_read_the_index(published, aperio):
    search = aperio("plugin", "search", "acme", "--json")
    assert search.returncode == 0, search.stderr
    assert {row["id"]: row["latest_installable"] for row in json.loads(search.stdout)} == {
        "acme.alpha": "1.1.0",
        "acme.siem": "1.0.0",
    }
    assert "acme.siem" in aperio("plugin", "search", "destination").stdout
    assert "no plugin matches" in aperio("plugin", "search", "nothing-like-this").stdout
    versions = json.loads(aperio("plugin", "versions", "acme.alpha", "--json").stdout)
    assert [(v["version"], v["installable"], v["signed"]) for v in versions] == [
        ("1.1.0", True, True),
        ("1.0.0", True, True),
    ]
    table = aperio("plugin", "versions", "acme.alpha").stdout
    assert "1.1.0" in table
    assert "ed25519" in table


def test_lock_and_install_locked(published, aperio, tmp_path, plugins_dir):
    assert aperio("plugin", "install", "acme.alpha@1.0.0").returncode == 0
    lock_file = tmp_path / "plugins.lock"
    locked = aperio("plugin", "lock", "-o", str(lock_file))
    assert locked.returncode == 0, locked.stderr
    pinned = json.loads(lock_file.read_text())["plugins"]
    assert [(p["distribution"], p["version"]) for p in pinned] == [("acme-alpha", "1.0.0")]
    assert aperio("plugin", "remove", "acme.alpha").returncode == 0
    reinstalled = aperio("plugin", "install", "--locked", "--lock-file", str(lock_file))
    assert reinstalled.returncode == 0, reinstalled.stderr
    assert "acme-alpha 1.0.0" in reinstalled.stdout
    assert [p.name for p in plugins_dir.glob("*.dist-info")] == ["acme_alpha-1.0.0.dist-info"]


def test_registry_add_then_validate(aperio, tmp_path, sign, wheel_dir):
    index = tmp_path / "new-registry" / "index.json"
    wheel = sign(connector_wheel(wheel_dir, "acme.gamma", distribution="acme-gamma"))
    url = f"https://plugins.invalid/{wheel.name}"
    added = aperio("registry", "add", str(index), str(wheel), "--download-url", url, "--publisher", "Acme")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added acme.gamma 1.0.0 (sha256 ")
    again = aperio("registry", "add", str(index), str(wheel), "--download-url", url, "--publisher", "Acme")
    assert "already listed with this artifact" in again.stdout
    document = json.loads(index.read_text())
    release = document["plugins"][0]["versions"][0]
    assert release["signatures"][0]["kind"] == "ed25519"
    assert release["api_requirement"] == "<2,>=1.0"
    valid = aperio("registry", "validate", str(index))
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "ok   acme.gamma 1.0.0" in valid.stdout

    release["url"] = "http://plugins.invalid/" + wheel.name
    index.write_text(json.dumps(document))
    invalid = aperio("registry", "validate", str(index), "--json")
    assert invalid.returncode == 1
    report = json.loads(invalid.stdout)
    assert report["ok"] is False
    assert "must be https://" in report["releases"][0]["problems"][0]


def test_registry_add_refuses_a_changed_release(aperio, tmp_path, sign, wheel_dir):
    index = tmp_path / "index.json"
    first = sign(connector_wheel(wheel_dir / "1", "acme.gamma", distribution="acme-gamma"))
    second = sign(connector_wheel(wheel_dir / "2", "acme.gamma", distribution="acme-gamma", extra_source="# changed\n"))
    url = f"https://plugins.invalid/{first.name}"
    assert aperio("registry", "add", str(index), str(first), "--download-url", url, "--publisher", "A").returncode == 0
    before = index.read_bytes()
    refused = aperio("registry", "add", str(index), str(second), "--download-url", url, "--publisher", "A")
    assert refused.returncode == 1
    assert "published releases never change" in refused.stderr
    assert index.read_bytes() == before


def test_validate_with_downloads_catches_a_wrong_digest_and_an_unsigned_release(published, aperio):
    published.edit(lambda document: published.release(document, "acme.alpha", "1.0.0").update(sha256="0" * 64))
    result = aperio("registry", "validate", published.index_url, "--check-downloads")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("FAIL acme.alpha 1.0.0: acme.alpha 1.0.0: sha256") for line in lines), lines
    assert "ok   acme.alpha 1.1.0" in lines
    assert any(line.startswith("FAIL acme.siem 1.0.0:") and "unsigned" in line for line in lines), lines
