"""Every store interface's behaviour, the same on SQLite and PostgreSQL (the `backend` fixture)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest

from aperio_plugins import Isolation, StateStoreError
from aperio_plugins._records import TokenRecord
from aperio_plugins._state import SeenIndex

NOW = datetime(2026, 12, 7, 13, 0, tzinfo=timezone.utc)


def test_enable_flags_persist_across_instances_and_the_last_write_wins(open_store):
    store = open_store()
    assert store.enabled_flags() == {}
    store.set_enabled("acme.a", False)
    store.set_enabled("acme.b", True)
    store.set_enabled("acme.a", True)
    store.set_enabled("acme.b", False)
    assert open_store().enabled_flags() == {"acme.a": True, "acme.b": False}


def test_isolation_overrides_are_set_replaced_and_returned_to_the_default(open_store):
    store = open_store()
    store.set_isolation("acme.a", Isolation.PROCESS)
    store.set_isolation("acme.b", Isolation.PROCESS)
    store.set_isolation("acme.b", Isolation.INPROCESS)
    assert open_store().isolation_overrides() == {"acme.a": Isolation.PROCESS, "acme.b": Isolation.INPROCESS}
    store.set_isolation("acme.a", None)
    store.set_isolation("acme.never-set", None)
    assert store.isolation_overrides() == {"acme.b": Isolation.INPROCESS}


@pytest.mark.parametrize(("purge_data", "kept"), [(True, []), (False, ["cursor"])])
def test_forgetting_a_plugin_drops_its_decisions_and_with_purge_its_data(open_store, purge_data, kept):
    store = open_store()
    store.set_enabled("acme.a", False)
    store.set_isolation("acme.a", Isolation.PROCESS)
    store.kv_set("acme.a", "cursor", "7")
    store.set_enabled("acme.b", False)
    store.forget_plugin("acme.a", purge_data=purge_data)
    assert store.enabled_flags() == {"acme.b": False}
    assert store.isolation_overrides() == {}
    assert store.kv_keys("acme.a") == kept


def test_kv_is_namespaced_per_plugin_and_prefixes_are_literal(open_store):
    store = open_store()
    store.kv_set("acme.a", "cursor", "1")
    store.kv_set("acme.b", "cursor", "2")
    store.kv_set("acme.a", "cursor", "3")
    # Characters that are wildcards to LIKE, placeholders to a driver, or quotes to SQL stay literal.
    for key in ("100%_done", "10_00", "what?", "it's", "ü-ключ"):
        store.kv_set("acme.a", key, f"value of {key} %s ? '")
    assert store.kv_get("acme.a", "cursor") == "3"
    assert store.kv_get("acme.b", "cursor") == "2"
    assert store.kv_get("acme.a", "what?") == "value of what? %s ? '"
    assert store.kv_keys("acme.a", prefix="10") == ["100%_done", "10_00"]
    assert store.kv_keys("acme.a", prefix="100%") == ["100%_done"]
    assert store.kv_keys("acme.a") == sorted(["cursor", "100%_done", "10_00", "what?", "it's", "ü-ключ"])
    store.kv_delete("acme.a", "cursor")
    store.kv_delete("acme.a", "no-such-key")
    assert store.kv_get("acme.a", "cursor") is None
    assert store.kv_get("acme.c", "cursor") is None
    big = "x" * 200_000
    store.kv_set("acme.c", "blob", big)
    assert open_store().kv_get("acme.c", "blob") == big


def test_registry_marks_are_recorded_and_replaced_per_source(open_store):
    store = open_store()
    assert store.seen_index("https://index.example/a") is None
    first = SeenIndex(1, NOW, "a" * 64)
    newer = SeenIndex(2, NOW + timedelta(hours=1), "b" * 64)
    store.record_index("https://index.example/a", first)
    store.record_index("oci://127.0.0.1:5000/b", first)
    store.record_index("https://index.example/a", newer)
    again = open_store()
    assert again.seen_index("https://index.example/a") == newer
    assert again.seen_index("oci://127.0.0.1:5000/b") == first
    assert again.seen_index("https://index.example/a").updated_at.tzinfo is not None


def test_tokens_names_are_unique_until_revoked_and_found_by_digest(open_store):
    store = open_store()
    store.add_token(TokenRecord("ops", "a" * 64, ("plugins:read", "plugins:admin"), NOW, NOW + timedelta(days=1)))
    store.add_token(TokenRecord("ci", "c" * 64, ("plugins:execute",), NOW))
    with pytest.raises(StateStoreError, match="a token named 'ops' already exists; revoke it first"):
        store.add_token(TokenRecord("ops", "b" * 64, ("plugins:read",), NOW))
    # The refused token left nothing behind.
    assert store.token_by_digest("b" * 64) is None
    record = open_store().token_by_digest("a" * 64)
    assert record == TokenRecord("ops", "a" * 64, ("plugins:read", "plugins:admin"), NOW, NOW + timedelta(days=1))
    assert store.revoke_token("ops", NOW) is True
    assert store.revoke_token("ops", NOW) is False
    assert store.revoke_token("nobody", NOW) is False
    assert store.token_by_digest("a" * 64).revoked_at == NOW
    store.add_token(TokenRecord("ops", "d" * 64, ("plugins:read",), NOW))
    assert store.token_by_digest("a" * 64) is None
    assert [(t.name, t.token_sha256[0], t.revoked_at) for t in store.tokens()] == [
        ("ci", "c", None),
        ("ops", "d", None),
    ]


def test_the_audit_trail_reads_back_newest_first_filtered_and_paged(open_store):
    store = open_store()
    for number in range(12):
        store.record_event(
            "plugin.enabled" if number % 2 else "plugin.disabled",
            level="info",
            occurred_at=NOW + timedelta(seconds=number),
            plugin_id=f"acme.{number % 3}",
            actor="ops" if number < 6 else "ci",
            fields=json.dumps({"n": number, "note": "100% ?"}),
        )
    store.record_event("x" * 300, level="warning", occurred_at=NOW, plugin_id=None, actor=None, fields="[1, 2]")
    everything = open_store().audit_events(limit=100)
    assert [event.fields.get("n") for event in everything[1:]] == list(range(11, -1, -1))
    assert everything[0].event == "x" * 200
    assert everything[0].fields == {"value": [1, 2]}
    assert everything[0].plugin_id is None
    assert everything[1].occurred_at == NOW + timedelta(seconds=11)
    assert everything[1].fields == {"n": 11, "note": "100% ?"}
    ids = [event.id for event in everything]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == len(ids)
    matching = store.audit_events(plugin_id="acme.0", event="plugin.disabled", actor="ops")
    assert [event.fields["n"] for event in matching] == [0]
    page = store.audit_events(limit=5)
    following = store.audit_events(before=page[-1].id, limit=5)
    assert [event.id for event in page + following] == ids[:10]
    assert [event.fields["n"] for event in store.audit_events(actor="ci", limit=2)] == [11, 10]


def test_a_closed_store_is_refused_in_one_typed_error(open_store):
    store = open_store()
    store.close()
    with pytest.raises(StateStoreError):
        store.set_enabled("acme.a", True)


def test_threads_and_hosts_writing_at_once_lose_nothing(open_store):
    """Eight threads over two store instances (two hosts), each writing its own keys and the same ones."""
    hosts = [open_store(), open_store()]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        store = hosts[worker % 2]
        try:
            start.wait()
            for step in range(25):
                store.kv_set("acme.shared", f"w{worker}-{step}", str(step))
                store.kv_set("acme.shared", "last", f"{worker}-{step}")
                store.set_enabled("acme.flapping", step % 2 == 0)
                store.set_isolation("acme.flapping", Isolation.PROCESS)
                store.record_index("https://index.example/", SeenIndex(1, NOW, f"{worker:064d}"))
                store.record_event(
                    "kv.write", level="info", occurred_at=NOW, plugin_id="acme.shared", actor=f"w{worker}", fields="{}"
                )
        except BaseException as exc:  # noqa: BLE001 - a thread's failure is collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    reader = open_store()
    keys = reader.kv_keys("acme.shared")
    assert len(keys) == 8 * 25 + 1
    assert reader.kv_get("acme.shared", "last").endswith("-24")
    assert reader.enabled_flags() == {"acme.flapping": True}
    assert reader.isolation_overrides() == {"acme.flapping": Isolation.PROCESS}
    assert len(reader.audit_events(event="kv.write", limit=1000)) == 8 * 25


def test_hosts_adding_the_same_token_name_at_once_store_exactly_one(open_store):
    hosts = [open_store() for _ in range(4)]
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def add(worker: int) -> None:
        start.wait()
        try:
            hosts[worker].add_token(TokenRecord("admin", f"{worker:064d}", ("plugins:admin",), NOW))
            outcomes.append("added")
        except StateStoreError as exc:
            outcomes.append(exc.message)

    threads = [threading.Thread(target=add, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["a token named 'admin' already exists; revoke it first"] * 3 + ["added"]
    assert len(open_store().tokens()) == 1
