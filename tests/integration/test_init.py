"""`aperio plugin init` for each kind, then the author's whole path as real commands: build with pip and
the project's own backend, run the project's tests (the SDK fixtures and the signed wheel in a strict
host), check, sign, and load the signed wheel verified in a strict host that calls it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from author_env import author_venv

from aperio_plugins import PluginState, SignatureStatus
from aperio_plugins.testing import generate_signing_key, strict_host

PAYLOADS = {
    "connector": ({"kind": "sync_request", "connector": "acme-hello", "config": {"items": ["x"]}}, "sync_result"),
    "remediation": (
        {
            "kind": "remediation_request",
            "id": "r1",
            "action": "acme-hello.tag",
            "resource": {"type": "file", "id": "1"},
        },
        "remediation_result",
    ),
    "destination": (
        {
            "kind": "delivery_batch",
            "destination": "acme-hello",
            "envelopes": [
                {"kind": "event", "id": "e1", "provider": "p", "type": "t", "occurred_at": "2026-01-01T00:00:00Z"}
            ],
        },
        "delivery_receipt",
    ),
}


@pytest.fixture(scope="module")
def venv_bin(tmp_path_factory) -> Path:
    return author_venv(tmp_path_factory.mktemp("author") / "venv")


def _run(bin_dir: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    # The author's own trust settings never leak into the scaffold's tests or checks.
    environment = {key: value for key, value in environment.items() if not key.startswith("APERIO_")}
    environment["APERIO_STATE_DIR"] = str(cwd / ".state")
    environment["APERIO_PLUGINS_DIR"] = str(cwd / ".plugins")
    return subprocess.run(
        list(command), cwd=cwd, env=environment, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_init_builds_tests_checks_signs_and_loads_verified(kind, venv_bin, tmp_path):
    python = str(venv_bin / "python")
    created = _run(
        venv_bin, "aperio", "plugin", "init", "acme-hello", "--kind", kind, "--dir", "acme-hello", cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    project = tmp_path / "acme-hello"

    built = _run(venv_bin, python, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", "dist", ".", cwd=project)
    assert built.returncode == 0, built.stderr
    wheel = project / "dist" / "acme_hello-0.1.0-py3-none-any.whl"
    assert wheel.is_file(), sorted(p.name for p in (project / "dist").iterdir())

    installed = _run(venv_bin, python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", ".", cwd=project)
    assert installed.returncode == 0, installed.stderr
    tested = _run(venv_bin, python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "4 passed" in tested.stdout

    checked = _run(venv_bin, "aperio", "plugin", "check", str(wheel), "--json", cwd=project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["plugins"] == {"acme.hello": "acme_hello.plugin"}
    assert report["hooks"] == {"acme.hello": [f"aperio_register_{kind}s"]}

    private_key, public_key = generate_signing_key(tmp_path / "keys", "author")
    signed = _run(venv_bin, "aperio", "plugin", "sign", str(wheel), "--key", str(private_key), cwd=project)
    assert signed.returncode == 0, signed.stderr

    payload, result_kind = PAYLOADS[kind]
    with strict_host([wheel], tmp_path / "host", public_keys=[public_key]) as host:
        info = host.get("acme.hello")
        assert (info.state, info.signature_status) == (PluginState.ENABLED, SignatureStatus.VERIFIED), info.error
        assert host.run("acme.hello", payload).model_dump()["kind"] == result_kind


def test_init_refuses_a_folder_that_holds_files(venv_bin, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")

    result = _run(
        venv_bin, "aperio", "plugin", "init", "acme-hello", "--kind", "connector", "--dir", "taken", cwd=tmp_path
    )

    assert result.returncode == 1
    assert result.stderr == "error: taken already exists and is not empty: nothing was written\n"
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    ("name", "plugin_id", "message"),
    [
        ("Acme_Hello", None, "is not a plugin project name"),
        ("acme-hello", "ACME.hello", "is not a valid plugin id"),
        ("acme-hello", "acme.h\u0435llo", "has non-ASCII characters"),
    ],
    ids=["not_a_distribution_name", "uppercase_id", "homoglyph_id"],
)
def test_init_refuses_bad_names_and_writes_nothing(name, plugin_id, message, tmp_path):
    from aperio_plugins._scaffold import ScaffoldKind, init_project
    from aperio_plugins.errors import PluginCheckError

    with pytest.raises(PluginCheckError, match=message):
        init_project(name, ScaffoldKind.CONNECTOR, tmp_path / "out", plugin_id=plugin_id)
    assert not (tmp_path / "out").exists()


def test_project_host_builds_signs_and_loads_the_project_verified(tmp_path):
    from aperio_plugins._scaffold import ScaffoldKind, init_project
    from aperio_plugins.testing import project_host

    init_project("acme-hello", ScaffoldKind.DESTINATION, tmp_path / "acme-hello")

    with project_host(tmp_path / "acme-hello", tmp_path / "work") as host:
        info = host.get("acme.hello")
        assert (info.state, info.signature_status) == (PluginState.ENABLED, SignatureStatus.VERIFIED), info.error
        assert host.settings.plugin_trust_mode.value == "strict"
        assert sorted(host.destinations) == ["acme-hello"]
