"""`aperio token …` and `aperio serve`, run as real subprocesses: the token shown once, stored hashed,
refused once revoked; the server started, answering with the token, stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from plugin_builders import connector_wheel

APERIO = str(Path(sys.executable).with_name("aperio"))
TOKEN = re.compile(r"aperio_[A-Za-z0-9_-]{40,}")


@pytest.fixture
def environment(tmp_path, plugins_dir):
    return {
        **os.environ,
        "APERIO_PLUGINS_DIR": str(plugins_dir),
        "APERIO_STATE_DIR": str(tmp_path / "state"),
        "APERIO_PLUGIN_TRUST_MODE": "warn",
    }


@pytest.fixture
def aperio(environment):
    def aperio(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([APERIO, *args], capture_output=True, text=True, env=environment, timeout=60, check=False)

    return aperio


def test_token_create_prints_it_once_and_stores_only_its_digest(aperio, tmp_path):
    created = aperio("token", "create", "ci-bot", "--permission", "plugins:read", "--expires", "30d")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert TOKEN.fullmatch(token)
    assert "shown only now" in created.stderr
    assert token not in created.stderr
    listed = aperio("token", "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["permissions"], r["revoked_at"]) for r in rows] == [("ci-bot", ["plugins:read"], None)]
    assert rows[0]["expires_at"] is not None
    assert token not in listed.stdout
    # The journal or WAL files beside the store may hold recent writes too.
    assert all(token.encode() not in path.read_bytes() for path in (tmp_path / "state").glob("state.sqlite3*"))
    again = aperio("token", "create", "ci-bot", "--permission", "plugins:admin")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == "error: a token named 'ci-bot' already exists; revoke it first or choose another name\n"
    revoked = aperio("token", "revoke", "ci-bot")
    assert (revoked.returncode, revoked.stdout) == (0, "revoked ci-bot\n")
    assert (
        aperio("token", "revoke", "ci-bot").stderr == "error: no active token named 'ci-bot' (see aperio token list)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--permission", "plugins:read", "--expires", "soon"], "error: expiry 'soon' is not a positive duration"),
        (["--permission", "plugins:read", "--expires", "0d"], "error: expiry '0d' is not a positive duration"),
        (["--permission", "plugins:root"], "Invalid value for '--permission'"),
    ],
)
def test_token_create_refuses_bad_input_in_one_line(aperio, args, message):
    result = aperio("token", "create", "x", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(aperio("token", "list", "--json").stdout) == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    def __init__(self, environment: dict[str, str]) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [APERIO, "serve", "--port", str(self.port)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 60
        while not any("Uvicorn running" in line for line in self.lines):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise AssertionError("aperio serve did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)  # Ctrl-C
        code = self.process.wait(timeout=30)
        self.reader.join(timeout=5)
        return code


def test_serve_prints_an_admin_token_on_first_start_only(environment, install, wheel_dir):
    install(connector_wheel(wheel_dir, "acme.conn"))
    first = Served(environment)
    try:
        tokens = TOKEN.findall(first.output)
        assert len(set(tokens)) == 1
        url = f"http://127.0.0.1:{first.port}"
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        plugins = httpx.get(f"{url}/api/v1/plugins", headers=headers, timeout=10).json()
        assert {p["id"]: p["state"] for p in plugins}["acme.conn"] == "enabled"
        assert httpx.get(f"{url}/api/v1/plugins", timeout=10).status_code == 401
        disabled = httpx.post(f"{url}/api/v1/plugins/acme.conn/disable", headers=headers, timeout=10)
        assert disabled.json()["plugin"]["state"] == "disabled"
    finally:
        assert first.stop() == 0
    assert tokens[0] not in first.output.split("Uvicorn running", 1)[1]  # not in the access log
    second = Served(environment)
    try:
        assert TOKEN.findall(second.output) == []
        url = f"http://127.0.0.1:{second.port}"
        plugins = httpx.get(f"{url}/api/v1/plugins", headers=headers, timeout=10).json()
        assert {p["id"]: p["state"] for p in plugins}["acme.conn"] == "disabled"  # the decision persisted
        events = httpx.get(f"{url}/api/v1/events", params={"actor": "admin"}, headers=headers, timeout=10).json()
        assert "api.plugin.disable" in {e["event"] for e in events["events"]}
    finally:
        assert second.stop() == 0
