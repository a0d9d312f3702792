"""The SQLite store as the outbox needs it: WAL mode and the same pragmas on every connection, an old
rollback-journal file switched on open, several real processes on one file without `database is
locked`, a reader that does not stall a writer, and the outbox's fast paths (a claim round marked
delivered in one commit, batches encoded as JSON) refusing what they must."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from aperio_hookspecs import DeliveryBatch, DeliveryReceipt, Event
from aperio_plugins._catalog import CatalogEntry
from aperio_plugins._dispatch import Dispatcher, DispatchPolicy, enqueue
from aperio_plugins._model import PluginKind
from aperio_plugins._state import BUSY_TIMEOUT_MS, SQLiteStateStore
from aperio_plugins.errors import DeliveryError

DESTINATIONS = {"sink": CatalogEntry("test.sink", PluginKind.DESTINATION, "sink", None, "records what it receives")}
WHEN = datetime(2026, 12, 7, tzinfo=timezone.utc)


def _events(prefix: str, count: int, **raw: Any) -> list[Event]:
    return [
        Event(id=f"{prefix}-{n}", provider="test", type="test.event", occurred_at=WHEN, raw=raw) for n in range(count)
    ]


class Sink:
    """A destination that accepts every envelope except those whose id it was told to refuse."""

    destinations = DESTINATIONS

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.refuse = refuse
        self.batches: list[DeliveryBatch] = []

    def run(self, plugin_id: str, payload: Any, *, timeout: float | None = None) -> DeliveryReceipt:
        assert isinstance(payload, DeliveryBatch)
        self.batches.append(payload)
        ids = [envelope.id for envelope in payload.envelopes]
        return DeliveryReceipt(
            destination=payload.destination,
            accepted=tuple(i for i in ids if i not in self.refuse),
            rejected=tuple({"id": i, "reason": "refused by the test"} for i in ids if i in self.refuse),
        )


def _journal_mode(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def test_the_store_runs_in_wal_with_its_pragmas_and_owner_only_files(tmp_path):
    path = tmp_path / "state" / "state.sqlite3"
    store = SQLiteStateStore(path)
    try:
        store.kv_set("p", "k", "v")
        pragmas = {
            name: store._connection.execute(f"PRAGMA {name}").fetchone()[0] for name in ("busy_timeout", "synchronous")
        }
        assert pragmas == {"busy_timeout": BUSY_TIMEOUT_MS, "synchronous": 2}  # 2 is FULL
        assert _journal_mode(path) == "wal"
        companions = sorted(p.name for p in path.parent.iterdir())
        assert companions == ["state.sqlite3", "state.sqlite3-shm", "state.sqlite3-wal"]
        # The log holds the same data as the database until a checkpoint: owner-only like it.
        assert {stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()} == {0o600}
    finally:
        store.close()


def test_a_database_made_in_rollback_journal_mode_is_switched_on_open(tmp_path):
    path = tmp_path / "state.sqlite3"
    first = SQLiteStateStore(path)
    first.set_enabled("acme.alpha", False)
    key = enqueue(first, DESTINATIONS, "sink", _events("old", 2))
    first.close()
    with sqlite3.connect(path) as connection:  # as a host from before WAL left it
        assert connection.execute("PRAGMA journal_mode = DELETE").fetchone()[0] == "delete"
    assert _journal_mode(path) == "delete"

    store = SQLiteStateStore(path)
    try:
        assert _journal_mode(path) == "wal"
        assert store.enabled_flags() == {"acme.alpha": False}
        sink = Sink()
        assert Dispatcher(sink, store).drain() == 1
        assert [(b.idempotency_key, [e.id for e in b.envelopes]) for b in sink.batches] == [(key, ["old-0", "old-1"])]
    finally:
        store.close()


def test_a_file_held_open_in_rollback_mode_stays_usable_and_is_switched_later(tmp_path, monkeypatch, caplog):
    path = tmp_path / "state.sqlite3"
    SQLiteStateStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = DELETE")
    # A host from before WAL, reading for longer than the switch waits (1 s here), then done: the
    # switch gives up with a warning, and the migration check that follows waits for the lock.
    monkeypatch.setattr("aperio_plugins._state.BUSY_TIMEOUT_MS", 1000)
    old_host = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    old_host.execute("BEGIN")
    old_host.execute("SELECT COUNT(*) FROM plugin_flags").fetchall()
    finished = threading.Timer(1.5, lambda: old_host.execute("COMMIT"))
    finished.start()
    try:
        with caplog.at_level("WARNING", logger="aperio_plugins._state"):
            store = SQLiteStateStore(path)
    finally:
        finished.join()
        old_host.close()
    assert "stays in journal mode unchanged (database is locked)" in caplog.text
    assert _journal_mode(path) == "delete"
    try:
        store.set_enabled("acme.alpha", False)  # it works, in the old mode
    finally:
        store.close()
    again = SQLiteStateStore(path)
    try:
        assert _journal_mode(path) == "wal"
        assert again.enabled_flags() == {"acme.alpha": False}
    finally:
        again.close()


def test_a_reader_holding_a_snapshot_does_not_stall_a_writer(tmp_path):
    # The CLI reading the outbox while `aperio serve` queues batches: with the rollback journal the
    # writer's commit waits for the reader (up to the busy timeout); in WAL it does not.
    path = tmp_path / "state.sqlite3"
    store = SQLiteStateStore(path)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM outbox_batches").fetchone() == (0,)
        started = time.monotonic()
        enqueue(store, DESTINATIONS, "sink", _events("w", 3))
        assert time.monotonic() - started < 2.0
        assert reader.execute("SELECT COUNT(*) FROM outbox_batches").fetchone() == (0,)  # its snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM outbox_batches").fetchone() == (1,)
    finally:
        reader.close()
        store.close()


PRODUCER = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from aperio_hookspecs import Event
from aperio_plugins._state import SQLiteStateStore
from aperio_plugins._dispatch import enqueue
from test_outbox_sqlite import DESTINATIONS
name, count = sys.argv[1], int(sys.argv[2])
store = SQLiteStateStore(Path(sys.argv[3]))
when = datetime(2026, 12, 7, tzinfo=timezone.utc)
for n in range(count):
    event = Event(id=f"{name}-{n}", provider="test", type="test.event", occurred_at=when)
    enqueue(store, DESTINATIONS, "sink", [event])
    store.kv_set(name, "last", str(n))  # an operator-state write between outbox writes
store.close()
"""

CONSUMER = """
import json, sys, time
from pathlib import Path
from aperio_plugins._state import SQLiteStateStore
name, total = sys.argv[1], int(sys.argv[2])
store = SQLiteStateStore(Path(sys.argv[3]))
claimed = []
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    batches = store.outbox_claim(name, 60.0, 3)
    claimed.extend(batch.id for batch in batches)
    store.outbox_complete_many([batch.id for batch in batches], name)
    done = sum(c.events for c in store.outbox_counts() if c.state.value == "delivered")
    if done == total:
        break
    if not batches:
        time.sleep(0.01)
store.close()
print(json.dumps(claimed))
"""


def test_several_processes_share_one_file_without_database_is_locked(tmp_path):
    path = tmp_path / "state.sqlite3"
    SQLiteStateStore(path).close()  # created and migrated once, as `aperio serve` would
    producers, per_producer, consumers = 3, 25, 2
    total = producers * per_producer
    environment_path = str(Path(__file__).parent)

    def start(script: str, *argv: object) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", textwrap.dedent(script), *map(str, argv)]
        env = {**os.environ, "PYTHONPATH": environment_path}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    running = [start(CONSUMER, f"consumer-{n}", total, path) for n in range(consumers)]
    running += [start(PRODUCER, f"producer{n}", per_producer, path) for n in range(producers)]
    outputs = [process.communicate(timeout=180) for process in running]
    assert [process.returncode for process in running] == [0] * len(running), [err for _, err in outputs]
    assert not any("locked" in err for _, err in outputs)

    claims = [json.loads(out) for out, _ in outputs[:consumers]]
    every_claim = [batch_id for claimed in claims for batch_id in claimed]
    assert len(every_claim) == len(set(every_claim)) == total  # each batch claimed once, by one process
    store = SQLiteStateStore(path)
    try:
        assert [(c.state.value, c.batches) for c in store.outbox_counts()] == [("delivered", total)]
        assert {store.kv_get(f"producer{n}", "last") for n in range(producers)} == {str(per_producer - 1)}
    finally:
        store.close()


def test_a_round_is_marked_in_one_go_and_a_taken_over_lease_is_not_overwritten(tmp_path):
    store = SQLiteStateStore(tmp_path / "state.sqlite3")
    try:
        keys = [enqueue(store, DESTINATIONS, "sink", _events(f"b{n}", 2)) for n in range(3)]
        refused = frozenset({"b1-0", "b1-1"})
        sink = Sink(refuse=refused)
        dispatcher = Dispatcher(sink, store, DispatchPolicy(claim_limit=10))
        assert dispatcher.run_once() == 3
        states = dict(store._run(("SELECT id, state FROM outbox_batches", ())))
        assert states == {keys[0]: "delivered", keys[1]: "dead", keys[2]: "delivered"}
        assert (dispatcher.counters.delivered, dispatcher.counters.dead_lettered) == (2, 1)

        late = enqueue(store, DESTINATIONS, "sink", _events("late", 1))
        [dead_host_batch] = store.outbox_claim("host-a", 0.2, 10)
        time.sleep(0.3)
        [taken_over] = store.outbox_claim("host-b", 30.0, 10)
        assert dead_host_batch.id == taken_over.id == late
        assert store.outbox_complete_many([late], "host-a") == set()  # the lease moved on
        assert store._run(("SELECT lease_owner, state FROM outbox_batches WHERE id = ?", (late,))) == [
            ("host-b", "queued")
        ]
        assert store.outbox_complete_many([late], "host-b") == {late}
    finally:
        store.close()


def test_non_finite_numbers_are_refused_and_nothing_is_queued(tmp_path):
    store = SQLiteStateStore(tmp_path / "state.sqlite3")
    try:
        for value in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(DeliveryError, match="not queued: NaN and Infinity are not JSON numbers"):
                enqueue(store, DESTINATIONS, "sink", _events("n", 2, reading=value))
        assert store.outbox_counts() == []
        # The words themselves, in strings, are ordinary data.
        enqueue(store, DESTINATIONS, "sink", _events("s", 1, note="NaN or Infinity", values=[1.5, "NaN"]))
        sink = Sink()
        assert Dispatcher(sink, store).drain() == 1
        assert dict(sink.batches[0].envelopes[0].raw) == {"note": "NaN or Infinity", "values": [1.5, "NaN"]}
    finally:
        store.close()
