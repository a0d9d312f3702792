"""Numbered schema migrations on both backends: fresh, upgraded, newer refused, interrupted rolled back,
and several hosts starting at once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone

import pytest

from aperio_plugins import StateStoreError
from aperio_plugins._migrations import MIGRATIONS, SCHEMA_VERSION, Migration
from aperio_plugins._records import TokenRecord

ALL_TABLES = {
    "schema_version",
    "outbox_batches",
    "plugin_flags",
    "plugin_isolation",
    "plugin_kv",
    "registry_indexes",
    "api_tokens",
    "audit_events",
    "fleet_lock",
    "fleet_hosts",
}


NEXT = SCHEMA_VERSION + 1  # the number of a test's own step after the real ones


def _step(version: int, *statements: str) -> Migration:
    return Migration(version, f"test step {version}", statements, statements)


def test_the_steps_are_numbered_one_by_one_from_1():
    assert [step.version for step in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == MIGRATIONS[-1].version == 4


def test_a_fresh_store_gets_every_step(backend, open_store):
    open_store()
    assert backend.tables() == ALL_TABLES
    assert backend.version() == [SCHEMA_VERSION]


def test_a_store_of_the_previous_version_is_upgraded_and_keeps_its_data(backend, open_store):
    old = open_store(MIGRATIONS[:-1])
    old.set_enabled("acme.a", False)
    old.kv_set("acme.a", "cursor", "41")
    old.close()
    assert backend.version() == [SCHEMA_VERSION - 1]
    assert "outbox_batches" not in backend.tables()
    store = open_store()
    assert backend.version() == [SCHEMA_VERSION]
    assert store.enabled_flags() == {"acme.a": False}
    assert store.kv_get("acme.a", "cursor") == "41"
    now = datetime.now(timezone.utc)
    store.add_token(TokenRecord("ops", "d" * 64, ("plugins:read",), now))
    store.record_event("plugin.enabled", level="info", occurred_at=now, plugin_id="acme.a", actor="ops", fields="{}")
    assert [(event.event, event.actor) for event in store.audit_events()] == [("plugin.enabled", "ops")]


def test_a_store_from_a_newer_host_is_refused_and_left_alone(backend, open_store):
    open_store().set_enabled("acme.a", True)
    backend.sql("UPDATE schema_version SET version = 99")
    with pytest.raises(
        StateStoreError, match=rf"schema version 99, newer than this host's {SCHEMA_VERSION}; upgrade aperio-plugins"
    ):
        backend.open()
    assert backend.version() == [99]
    assert backend.sql("SELECT plugin_id, enabled FROM plugin_flags") == [("acme.a", 1)]


def test_a_failing_step_is_rolled_back_whole_and_the_next_start_retries_it(backend, open_store):
    open_store()
    broken = (*MIGRATIONS, _step(NEXT, "CREATE TABLE half_done (n INTEGER)", "INSERT INTO no_such_table VALUES (1)"))
    with pytest.raises(
        StateStoreError,
        match=rf"migration {NEXT} \(test step {NEXT}\) failed and was rolled back,"
        rf" the store stays at schema version {SCHEMA_VERSION}: .*no_such_table",
    ):
        backend.open(broken)
    assert "half_done" not in backend.tables()
    assert backend.version() == [SCHEMA_VERSION]
    fixed = (*MIGRATIONS, _step(NEXT, "CREATE TABLE half_done (n INTEGER)", "INSERT INTO half_done VALUES (1)"))
    open_store(fixed)
    assert backend.version() == [NEXT]
    assert backend.sql("SELECT n FROM half_done") == [(1,)]


# A host whose next step creates a table, then runs long: SIGKILLed in the middle, it never commits.
_SLOW_STEP = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) SELECT count(*) FROM c",
    "postgres": "SELECT pg_sleep(60)",
}


def _writing(location: str) -> bool:
    try:
        with sqlite3.connect(location, timeout=0) as connection:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
    except sqlite3.OperationalError:
        return True  # "database is locked": a writer holds the lock
    return False


def _in_next_step(backend) -> bool:
    if backend.name == "sqlite":
        # The host holds the write lock for the whole step, and only for moments before it
        # (reading the version); this holds in rollback-journal and WAL modes alike.
        return _writing(backend.location) and not time.sleep(0.3) and _writing(backend.location)
    rows = backend.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'")
    return rows[0][0] > 0


def test_a_host_killed_in_the_middle_of_a_step_leaves_the_store_at_the_previous_version(backend, open_store):
    open_store().kv_set("acme.a", "cursor", "1")
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from aperio_plugins._migrations import MIGRATIONS, Migration
        from aperio_plugins._state import SQLiteStateStore
        statements = ("CREATE TABLE half_done (n INTEGER)", "INSERT INTO half_done VALUES (1)", {_SLOW_STEP[backend.name]!r})
        steps = (*MIGRATIONS, Migration({NEXT}, "slow", statements, statements))
        if {backend.name!r} == "sqlite":
            SQLiteStateStore(Path({backend.location!r}), migrations=steps)
        else:
            from aperio_plugins._state_postgres import PostgresStateStore
            PostgresStateStore({backend.location!r}, migrations=steps)
        """
    )
    host = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not _in_next_step(backend):
            assert host.poll() is None, host.stderr.read().decode()
            assert time.monotonic() < deadline, "the host never reached the next step"
            time.sleep(0.02)
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    assert host.returncode == -signal.SIGKILL
    store = open_store()
    assert "half_done" not in backend.tables()
    assert backend.version() == [SCHEMA_VERSION]
    assert store.kv_get("acme.a", "cursor") == "1"


def test_hosts_starting_at_once_apply_each_step_exactly_once(backend):
    # The next step creates a table without IF NOT EXISTS and counts itself: a second run would fail or count 2.
    steps = (*MIGRATIONS, _step(NEXT, "CREATE TABLE applied (n INTEGER)", "INSERT INTO applied VALUES (1)"))
    start = threading.Barrier(6)
    stores: list[object] = []
    errors: list[BaseException] = []

    def host() -> None:
        start.wait()
        try:
            stores.append(backend.open(steps))
        except BaseException as exc:  # noqa: BLE001 - a thread's failure is collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=host) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert len(stores) == 6
    assert backend.version() == [NEXT]
    assert backend.sql("SELECT count(*) FROM applied") == [(1,)]
