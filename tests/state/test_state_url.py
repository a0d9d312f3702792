"""APERIO_STATE_URL: which store opens, bad URLs refused in one line that never shows the password,
and the host, the CLI and `aperio serve` sharing one PostgreSQL store between processes."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from plugin_builders import connector_wheel

from aperio_plugins import HostSettings, StateStoreError
from aperio_plugins._state import SQLiteStateStore
from aperio_plugins._state_url import open_state_store, open_state_url, redact_url
from aperio_plugins.worker._settings import WorkerSettings
from aperio_plugins.worker.supervise._spawn import worker_environment

APERIO = str(Path(sys.executable).with_name("aperio"))
SECRET = "hunter2-s3cret"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket closes


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ops:pw@db:5432/fleet", "postgresql://ops:***@db:5432/fleet"),
        ("postgresql://ops:p@ss/w:rd@db/fleet", "postgresql://ops:***@db/fleet"),
        ("postgres://ops:p%40ss@db/fleet?sslmode=require", "postgres://ops:***@db/fleet?sslmode=require"),
        (
            "postgresql://ops@db/fleet?password=pw&sslmode=require",
            "postgresql://ops@db/fleet?password=***&sslmode=require",
        ),
        ("postgresql://ops@db/fleet", "postgresql://ops@db/fleet"),
        ("postgresql:///fleet?host=/run/postgresql", "postgresql:///fleet?host=/run/postgresql"),
        ("host=db password='a b' user=ops", "host=db password=*** user=ops"),
    ],
)
def test_a_url_is_shown_with_its_password_masked(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql://ops:{secret}@127.0.0.1:{port}/fleet",
            'cannot open state store postgresql://ops:***@127.0.0.1:{port}/fleet: connection failed: connection to server at "127.0.0.1", port {port} failed: Connection refused',
        ),
        (
            "postgresql://ops@127.0.0.1:{port}/fleet?password={secret}",
            "cannot open state store postgresql://ops@127.0.0.1:{port}/fleet?password=***: connection failed",
        ),
        (
            "postgresql://ops:{secret}@127.0.0.1:notaport/fleet",
            'cannot open state store postgresql://ops:***@127.0.0.1:notaport/fleet: connection is bad: invalid integer value "notaport" for connection option "port"',
        ),
        (
            "postgresql://ops:{secret}@127.0.0.1:{port}/fleet?bogus=1",
            'APERIO_STATE_URL postgresql://ops:***@127.0.0.1:{port}/fleet?bogus=1 is not a usable PostgreSQL URL: invalid URI query parameter: "bogus"',
        ),
        (
            "postgresql://ops:{secret}@[::1/fleet",
            'APERIO_STATE_URL postgresql://ops:***@[::1/fleet is not a usable PostgreSQL URL: end of string reached when looking for matching "]"',
        ),
        (
            "mysql://ops:{secret}@127.0.0.1/fleet",
            "APERIO_STATE_URL must be a postgresql://user@host/database URL, not 'mysql://ops:***@127.0.0.1/fleet'; unset it to use the embedded SQLite store",
        ),
        (
            "host=127.0.0.1 password={secret}",
            "APERIO_STATE_URL must be a postgresql://user@host/database URL, not 'host=127.0.0.1 password=***'",
        ),
    ],
    ids=["unreachable", "password-parameter", "bad-port", "bad-parameter", "unparsable", "other-scheme", "not-a-url"],
)
def test_a_bad_or_unreachable_url_is_one_line_without_the_password(url, message):
    port = _closed_port()
    with pytest.raises(StateStoreError) as refused:
        open_state_url(url.format(secret=SECRET, port=port))
    text = refused.value.diagnostics()
    assert text.startswith(message.format(port=port))
    assert "\n" not in text
    assert SECRET not in text
    assert SECRET not in repr(refused.value)
    # No driver exception is chained for a traceback to print.
    assert refused.value.__cause__ is None
    assert refused.value.__context__ is None or refused.value.__suppress_context__


def test_a_wrong_password_is_refused_by_the_server_without_echoing_it(postgres_server):
    url = postgres_server.url(password=SECRET)
    with pytest.raises(StateStoreError, match='password authentication failed for user "aperio_test"') as refused:
        open_state_url(url)
    assert SECRET not in refused.value.diagnostics()
    assert "postgresql://aperio_test:***@127.0.0.1" in refused.value.diagnostics()


def test_without_the_postgres_extra_the_url_is_refused_naming_the_extra():
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from aperio_plugins._state_url import open_state_url\n"
        "from aperio_plugins.errors import StateStoreError\n"
        "try:\n"
        f"    open_state_url('postgresql://ops:{SECRET}@127.0.0.1:1/fleet')\n"
        "except StateStoreError as exc:\n"
        "    print(exc.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == (
        "APERIO_STATE_URL names PostgreSQL, which needs the postgres extra (psycopg is missing):"
        " pip install 'aperio-plugins[postgres]'\n"
    )


def test_the_core_imports_no_database_driver_until_a_url_asks_for_one(tmp_path):
    code = (
        "import sys\n"
        "import aperio_plugins, aperio_plugins.cli, aperio_plugins.registry\n"
        "from aperio_plugins import HostSettings\n"
        "from aperio_plugins._state_url import open_state_store\n"
        f"open_state_store(HostSettings(state_dir={str(tmp_path)!r})).close()\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('psycopg', 'psycopg_pool')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"


def test_the_url_stays_out_of_reprs_dumps_and_every_worker_environment(tmp_path):
    url = f"postgresql://ops:{SECRET}@127.0.0.1:5432/fleet"
    settings = HostSettings(state_dir=tmp_path, state_url=url)
    assert settings.state_url is not None
    assert settings.state_url.get_secret_value() == url
    assert SECRET not in repr(settings) + str(settings) + settings.model_dump_json()
    environment = worker_environment(settings, WorkerSettings(), source={"PATH": "/usr/bin"})
    assert not [name for name, value in environment.items() if SECRET in value or name == "APERIO_STATE_URL"]


def test_an_empty_url_means_the_embedded_store(tmp_path):
    store = open_state_store(HostSettings(state_dir=tmp_path, state_url="  "))
    try:
        assert isinstance(store, SQLiteStateStore)
        assert (tmp_path / "state.sqlite3").exists()
    finally:
        store.close()


# -- the CLI and `aperio serve`, as real processes ---------------------------------------------------


def _environment(tmp_path: Path, plugins_dir: Path, url: str, host: str) -> dict[str, str]:
    return {
        **os.environ,
        "APERIO_PLUGINS_DIR": str(plugins_dir),
        "APERIO_STATE_DIR": str(tmp_path / host),  # each host its own directory; the store is shared
        "APERIO_PLUGIN_TRUST_MODE": "warn",
        "APERIO_STATE_URL": url,
    }


def _serve_helpers() -> ModuleType:
    """The `aperio serve` harness of tests/integration/test_cli_serve.py (not on the test import path)."""
    path = Path(__file__).parents[1] / "integration" / "test_cli_serve.py"
    spec = importlib.util.spec_from_file_location("_cli_serve_harness", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _aperio(environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([APERIO, *args], capture_output=True, text=True, env=environment, timeout=120, check=False)


@pytest.mark.parametrize("command", [["plugin", "list"], ["token", "list"], ["serve", "--port", "0"]])
def test_the_cli_refuses_an_unreachable_store_in_one_line_and_imports_no_plugin(
    tmp_path, plugins_dir, install, wheel_dir, marker, command
):
    install(connector_wheel(wheel_dir, "acme.conn", marker=marker))
    port = _closed_port()
    environment = _environment(tmp_path, plugins_dir, f"postgresql://ops:{SECRET}@127.0.0.1:{port}/fleet", "host")
    result = _aperio(environment, *command)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"error: cannot open state store postgresql://ops:***@127.0.0.1:{port}/fleet: connection failed:"
    )
    assert result.stderr.count("\n") == 1
    assert SECRET not in result.stderr
    assert not marker.exists()  # without the store no plugin is imported: the host cannot know what is disabled


def test_hosts_share_decisions_and_tokens_through_postgresql(
    postgres_server, tmp_path, plugins_dir, install, wheel_dir
):
    install(connector_wheel(wheel_dir, "acme.conn"))
    url = postgres_server.create_database("fleet_cli")
    one, two = (_environment(tmp_path, plugins_dir, url, host) for host in ("host-one", "host-two"))
    disabled = _aperio(one, "plugin", "disable", "acme.conn")
    assert disabled.returncode == 0, disabled.stderr
    created = _aperio(one, "token", "create", "ci-bot", "--permission", "plugins:read")
    assert created.returncode == 0, created.stderr
    listed = _aperio(two, "plugin", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {row["id"]: row["state"] for row in json.loads(listed.stdout)}["acme.conn"] == "disabled"
    tokens = json.loads(_aperio(two, "token", "list", "--json").stdout)
    assert [(row["name"], row["revoked_at"]) for row in tokens] == [("ci-bot", None)]
    assert _aperio(two, "token", "revoke", "ci-bot").returncode == 0
    import psycopg

    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT plugin_id, enabled FROM plugin_flags").fetchall() == [("acme.conn", 0)]
        assert connection.execute("SELECT revoked_at IS NOT NULL FROM api_tokens").fetchall() == [(True,)]
    # Nothing was written to either host's embedded store.
    assert not (tmp_path / "host-one" / "state.sqlite3").exists()
    assert not (tmp_path / "host-two" / "state.sqlite3").exists()


def test_serve_on_a_second_host_uses_the_admin_token_the_first_created(
    postgres_server, tmp_path, plugins_dir, install, wheel_dir
):
    serving = _serve_helpers()
    TOKEN, Served = serving.TOKEN, serving.Served

    install(connector_wheel(wheel_dir, "acme.conn"))
    url = postgres_server.create_database("fleet_serve")
    first = Served(_environment(tmp_path, plugins_dir, url, "host-one"))
    try:
        tokens = TOKEN.findall(first.output)
        assert len(set(tokens)) == 1
    finally:
        assert first.stop() == 0
    second = Served(_environment(tmp_path, plugins_dir, url, "host-two"))
    try:
        assert TOKEN.findall(second.output) == []  # the fleet already has a usable token
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        base = f"http://127.0.0.1:{second.port}/api/v1"
        disabled = httpx.post(f"{base}/plugins/acme.conn/disable", headers=headers, timeout=10)
        assert disabled.status_code == 200, disabled.text
        events = httpx.get(f"{base}/events", params={"actor": "admin"}, headers=headers, timeout=10).json()
        assert "api.plugin.disable" in {event["event"] for event in events["events"]}
    finally:
        assert second.stop() == 0
    assert SECRET not in first.output + second.output
    assert postgres_server.password not in first.output + second.output
