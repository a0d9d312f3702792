from __future__ import annotations

import sqlite3
import stat

import pytest

from aperio_plugins import SQLiteStateStore, StateStoreError
from aperio_plugins._migrations import SCHEMA_VERSION


def test_flags_persist_across_instances(tmp_path):
    store = SQLiteStateStore.in_directory(tmp_path)
    store.set_enabled("acme.a", False)
    store.set_enabled("acme.b", True)
    store.set_enabled("acme.a", True)
    store.close()
    assert SQLiteStateStore.in_directory(tmp_path).enabled_flags() == {"acme.a": True, "acme.b": True}


def test_kv_is_namespaced_per_plugin(tmp_path):
    store = SQLiteStateStore(tmp_path / "s.db")
    store.kv_set("acme.a", "cursor", "1")
    store.kv_set("acme.b", "cursor", "2")
    store.kv_set("acme.a", "cursor", "3")
    store.kv_set("acme.a", "other", "x")
    assert store.kv_get("acme.a", "cursor") == "3"
    assert store.kv_get("acme.b", "cursor") == "2"
    assert store.kv_keys("acme.a") == ["cursor", "other"]
    assert store.kv_keys("acme.a", prefix="cur") == ["cursor"]
    store.kv_delete("acme.a", "cursor")
    assert store.kv_get("acme.a", "cursor") is None
    store.forget_plugin("acme.b")
    assert store.kv_keys("acme.b") == []


def test_state_file_is_private_to_its_owner(tmp_path):
    store = SQLiteStateStore.in_directory(tmp_path / "state")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_a_corrupted_state_store_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateStoreError, match=r"state store .*state.sqlite3 is unreadable .*move it aside"):
        SQLiteStateStore(path)


def test_a_store_from_a_newer_host_is_refused(tmp_path):
    path = tmp_path / "state.sqlite3"
    SQLiteStateStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StateStoreError, match=f"schema version 99, newer than this host's {SCHEMA_VERSION}"):
        SQLiteStateStore(path)


def test_host_refuses_to_start_on_a_corrupted_store(make_host, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.sqlite3").write_bytes(b"\x00garbage" * 512)
    with pytest.raises(StateStoreError, match="unreadable"):
        make_host()


def test_a_version_1_store_is_migrated_to_hold_tokens_and_the_audit_trail(tmp_path):
    import sqlite3
    from datetime import datetime, timezone

    from aperio_plugins._records import TokenRecord
    from aperio_plugins._state import SCHEMA_VERSION

    path = tmp_path / "state.sqlite3"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    old.execute("INSERT INTO schema_version (version) VALUES (1)")
    old.execute(
        "CREATE TABLE plugin_flags (plugin_id VARCHAR(200) PRIMARY KEY, enabled INTEGER NOT NULL, updated_at VARCHAR(40) NOT NULL)"
    )
    old.execute("INSERT INTO plugin_flags VALUES ('acme.a', 0, '2026-01-01T00:00:00+00:00')")
    old.commit()
    old.close()
    store = SQLiteStateStore(path)
    assert store.enabled_flags() == {"acme.a": False}
    now = datetime.now(timezone.utc)
    store.add_token(TokenRecord("ops", "d" * 64, ("plugins:read",), now))
    store.record_event("plugin.enabled", level="info", occurred_at=now, plugin_id="acme.a", actor="ops", fields="{}")
    assert [t.name for t in store.tokens()] == ["ops"]
    assert [(e.event, e.actor) for e in store.audit_events(plugin_id="acme.a")] == [("plugin.enabled", "ops")]
    store.close()
    assert sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION >= 2


def test_a_token_name_in_use_is_refused_and_a_revoked_one_reused(tmp_path):
    from datetime import datetime, timezone

    from aperio_plugins._records import TokenRecord

    store = SQLiteStateStore.in_directory(tmp_path)
    now = datetime.now(timezone.utc)
    store.add_token(TokenRecord("ops", "a" * 64, ("plugins:read",), now))
    with pytest.raises(StateStoreError, match="a token named 'ops' already exists"):
        store.add_token(TokenRecord("ops", "b" * 64, ("plugins:read",), now))
    assert store.revoke_token("ops", now) is True
    assert store.revoke_token("ops", now) is False
    assert store.token_by_digest("a" * 64).revoked_at == now
    store.add_token(TokenRecord("ops", "c" * 64, ("plugins:admin",), now))
    assert store.token_by_digest("a" * 64) is None
    assert [(t.name, t.permissions, t.revoked_at) for t in store.tokens()] == [("ops", ("plugins:admin",), None)]
