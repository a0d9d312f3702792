from __future__ import annotations

import sqlite3
import stat

import pytest

from aperio_plugins import SQLiteStateStore, StateStoreError


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
    with pytest.raises(StateStoreError, match="schema version 99, newer than this host's 1"):
        SQLiteStateStore(path)


def test_host_refuses_to_start_on_a_corrupted_store(make_host, tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.sqlite3").write_bytes(b"\x00garbage" * 512)
    with pytest.raises(StateStoreError, match="unreadable"):
        make_host()
