"""The fleet's records on both backends: pinned lock revisions, heartbeats and their TTL, audit
records with their host, and a repeated decision that changes nothing (no echo between hosts)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from aperio_plugins._model import Isolation


def test_each_pin_is_a_new_revision_that_every_host_reads(open_store):
    first, second = open_store(), open_store()
    assert first.pinned_lock() is None
    assert first.pin_lock('{"format_version": 1, "plugins": []}', pinned_by="cli:ops", pinned_on="host-a") == 1
    assert second.pin_lock('{"format_version": 1, "plugins": [1]}', pinned_by="admin", pinned_on="host-b") == 2
    pinned = first.pinned_lock()
    assert (pinned.revision, pinned.lock_text, pinned.pinned_by, pinned.pinned_on) == (
        2,
        '{"format_version": 1, "plugins": [1]}',
        "admin",
        "host-b",
    )


def test_a_host_that_stops_beating_is_gone_after_the_ttl(open_store):
    store = open_store()
    started = datetime.now(timezone.utc)
    store.beat("host-a", started_at=started, lock_revision=None, report="{}")
    store.beat("host-b", started_at=started, lock_revision=3, report='{"plugins": []}')
    assert [(h.host_name, h.lock_revision) for h in store.live_hosts(timedelta(seconds=30))] == [
        ("host-a", None),
        ("host-b", 3),
    ]
    time.sleep(0.3)
    store.beat("host-b", started_at=started, lock_revision=4, report="{}")
    assert [h.host_name for h in store.live_hosts(timedelta(seconds=0.2))] == ["host-b"]
    store.forget_host("host-b")
    assert store.live_hosts(timedelta(seconds=30)) == []


def test_audit_records_keep_the_host_they_happened_on(open_store):
    store = open_store()
    now = datetime.now(timezone.utc)
    store.record_event(
        "plugin.disabled", level="info", occurred_at=now, plugin_id="a", actor="ops", fields="{}", host="h1"
    )
    store.record_event("plugin.enabled", level="info", occurred_at=now, plugin_id="a", actor="ops", fields="{}")
    assert [(e.event, e.host) for e in store.audit_events()] == [("plugin.enabled", None), ("plugin.disabled", "h1")]


def test_writing_a_decision_that_is_already_stored_changes_nothing(backend, open_store):
    store = open_store()
    store.set_enabled("acme.a", False)
    store.set_isolation("acme.a", Isolation.PROCESS)
    before = backend.sql("SELECT updated_at FROM plugin_flags") + backend.sql("SELECT updated_at FROM plugin_isolation")
    time.sleep(0.01)
    # A host applying a decision it received repeats the write: it must not look like a new decision.
    store.set_enabled("acme.a", False)
    store.set_isolation("acme.a", Isolation.PROCESS)
    after = backend.sql("SELECT updated_at FROM plugin_flags") + backend.sql("SELECT updated_at FROM plugin_isolation")
    assert after == before
    store.set_enabled("acme.a", True)
    assert store.enabled_flags() == {"acme.a": True}
