"""`aperio plugin dev`: a project loaded by a development host as a `dev` build, reloaded when its files
change, refused outside development (without running its code), and never signed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aperio_plugins._dev import development_wheel
from aperio_plugins._scaffold import ScaffoldKind, init_project
from aperio_plugins.testing import generate_signing_key

APERIO = str(Path(sys.executable).with_name("aperio"))
MARKER_CODE = "import pathlib as _p\n_p.Path({path!r}).open('a').write('imported\\n')\n"


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh connector project whose module appends a line to `imported.txt` when it is imported."""
    root = tmp_path / "acme-hello"
    init_project("acme-hello", ScaffoldKind.CONNECTOR, root)
    module = root / "src" / "acme_hello" / "_connector.py"
    future = "from __future__ import annotations\n"
    marker = MARKER_CODE.format(path=str(tmp_path / "imported.txt"))
    module.write_text(module.read_text().replace(future, future + marker, 1))
    return root


def environment(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("APERIO_")}
    env.update(
        APERIO_PLUGINS_DIR=str(tmp_path / "plugins"),
        APERIO_STATE_DIR=str(tmp_path / "state"),
        APERIO_PLUGIN_TRUSTED_KEYS_DIR=str(tmp_path / "keys"),
        APERIO_ENVIRONMENT="development",
        APERIO_PLUGIN_TRUST_MODE="warn",
    )
    env.update(values)
    return env


def aperio(tmp_path: Path, *args: str, **values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [APERIO, *args], capture_output=True, text=True, env=environment(tmp_path, **values), timeout=300, check=False
    )


def listed(tmp_path: Path, **values: str) -> dict[str, dict[str, object]]:
    rows = json.loads(aperio(tmp_path, "plugin", "list", "--json", **values).stdout)
    return {row["id"]: row for row in rows}


def test_dev_loads_the_project_as_a_dev_build_listed_as_such(tmp_path, project):
    result = aperio(tmp_path, "plugin", "dev", str(project), "--once")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "acme.hello: loaded, enabled (unsigned, dev)"
    row = listed(tmp_path)["acme.hello"]
    assert (row["state"], row["signature_status"], row["development_build"]) == ("enabled", "unsigned", True)
    table = aperio(tmp_path, "plugin", "list").stdout
    assert any(line.startswith("acme.hello ") and "unsigned (dev)" in line for line in table.splitlines())


def test_outside_development_a_dev_build_is_refused_and_its_code_never_runs(tmp_path, project):
    assert aperio(tmp_path, "plugin", "dev", str(project), "--once").returncode == 0
    (tmp_path / "imported.txt").unlink()

    for trust in ("warn", "disabled"):
        row = listed(tmp_path, APERIO_ENVIRONMENT="production", APERIO_PLUGIN_TRUST_MODE=trust)["acme.hello"]
        assert row["state"] == "failed"
        assert row["development_build"] is True
        assert (
            "a development build (installed by aperio plugin dev) loads only with APERIO_ENVIRONMENT=development"
            in row["error"]
        )
    assert not (tmp_path / "imported.txt").exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"APERIO_ENVIRONMENT": "production"}, "aperio plugin dev runs only with APERIO_ENVIRONMENT=development"),
        ({"APERIO_PLUGIN_TRUST_MODE": "strict"}, "set APERIO_PLUGIN_TRUST_MODE=warn (or disabled) for development"),
    ],
    ids=["production", "strict"],
)
def test_dev_refuses_to_start_outside_a_development_host_and_installs_nothing(tmp_path, project, values, message):
    result = aperio(tmp_path, "plugin", "dev", str(project), "--once", **values)

    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "plugins").exists()


def test_a_dev_build_is_never_signed(tmp_path, project):
    wheel = development_wheel(project, tmp_path / "dev-wheel")
    private_key, _ = generate_signing_key(tmp_path / "keys", "author")

    result = aperio(tmp_path, "plugin", "sign", str(wheel), "--key", str(private_key))

    assert result.returncode == 1
    assert "aperio-dev.json: a development build (aperio plugin dev) is never signed" in result.stderr


def _wait_for(path: Path, text: str, process: subprocess.Popen[str], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        assert process.poll() is None, content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not seen in {path}: {path.read_text()}")


def test_dev_rebuilds_and_reloads_when_a_file_changes(tmp_path, project):
    out = tmp_path / "dev.out"
    with out.open("w") as stream:
        process = subprocess.Popen(
            [APERIO, "plugin", "dev", str(project), "--interval", "0.2"],
            stdout=stream,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment(tmp_path),
        )
    try:
        _wait_for(out, "watching", process)
        module = project / "src" / "acme_hello" / "_connector.py"
        module.write_text(module.read_text().replace('type="acme-hello.item"', 'type="acme-hello.changed"'))
        _wait_for(out, "acme.hello: reloaded, enabled (unsigned, dev)", process)
    finally:
        process.terminate()
        process.wait(timeout=30)

    script = (
        "from aperio_plugins import PluginHost\nfrom aperio_hookspecs import SyncRequest\n"
        "with PluginHost() as host:\n    host.load()\n"
        "    print(host.run('acme.hello', SyncRequest(connector='acme-hello', config={'items': ['a']})).events[0].type)\n"
    )
    called = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment(tmp_path),
        timeout=120,
        check=False,
    )
    assert called.stdout.strip() == "acme-hello.changed", called.stderr
