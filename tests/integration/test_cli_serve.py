"""`aperio token …` and `aperio serve`, run as real subprocesses: the token shown once, stored hashed,
refused once revoked; the server started, answering with the token, stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from plugin_builders import connector_wheel
from serve_process import TOKEN, ServeProcess, run_aperio

# tests/state/test_state_url.py loads this module by its path for `TOKEN` and `Served`: keep both names.
Served = ServeProcess


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
        return run_aperio(environment, *args, timeout=60)

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


def test_serve_prints_an_admin_token_on_first_start_only(environment, install, wheel_dir):
    install(connector_wheel(wheel_dir, "acme.conn"))
    first = ServeProcess(environment, startup_timeout=60)
    try:
        tokens = first.printed_tokens
        assert len(set(tokens)) == 1
        plugins = first.get("/api/v1/plugins", tokens[0], timeout=10).json()
        assert {p["id"]: p["state"] for p in plugins}["acme.conn"] == "enabled"
        assert first.get("/api/v1/plugins", timeout=10).status_code == 401
        disabled = first.post("/api/v1/plugins/acme.conn/disable", tokens[0], timeout=10)
        assert disabled.json()["plugin"]["state"] == "disabled"
    finally:
        assert first.stop() == 0  # Ctrl-C
    assert tokens[0] not in first.output.split("Uvicorn running", 1)[1]  # not in the access log
    second = ServeProcess(environment, startup_timeout=60)
    try:
        assert second.printed_tokens == []
        plugins = second.get("/api/v1/plugins", tokens[0], timeout=10).json()
        assert {p["id"]: p["state"] for p in plugins}["acme.conn"] == "disabled"  # the decision persisted
        events = second.get("/api/v1/events", tokens[0], params={"actor": "admin"}, timeout=10).json()
        assert "api.plugin.disable" in {e["event"] for e in events["events"]}
    finally:
        assert second.stop() == 0


def test_serve_with_a_bad_setting_exits_with_one_line_and_the_harness_says_so(environment):
    with pytest.raises(AssertionError, match="did not start") as refused:
        ServeProcess({**environment, "APERIO_PLUGIN_TRUST_MODE": "lenient"}, startup_timeout=60)
    assert "APERIO_PLUGIN_TRUST_MODE='lenient'" in str(refused.value)
    assert "Traceback" not in str(refused.value)
