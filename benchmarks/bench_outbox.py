"""Benchmark of the durable outbox: enqueue-and-deliver throughput against raw `executemany` of the same rows.

    python benchmarks/bench_outbox.py [--events N] [--batch-sizes 100,1000] [--rounds R] [--no-postgres]
                                      [--sqlite-synchronous full|normal]

For each backend (SQLite in a temporary file; PostgreSQL on 127.0.0.1, started as the test suite starts
it, when its server binaries are present) and each batch size, one round:

- outbox: `enqueue` N events in batches (validation, one committed transaction per batch), then a
  `Dispatcher` drains them (claim under a lease, build each `DeliveryBatch`, call the destination,
  mark delivered). The destination accepts everything and does nothing else, so the figure is the
  outbox's own cost, not a receiver's;
- raw: the same N events as JSON rows, inserted by one `executemany` and one commit (`sqlite3`,
  or psycopg's `executemany`), which is the least a durable write of these rows can cost.

It prints events per second and the ratio outbox/raw (goal: at least 0.5; the median of each
round's ratio, the two measured back to back in every round), and the load average
before and after, since every commit waits for the disk and a busy machine slows commits more than
the one-commit baseline. The SQLite store runs as the host runs it (WAL, `synchronous=FULL`);
`--sqlite-synchronous normal` measures the mode it does not use, for comparison. The raw baseline
keeps `sqlite3`'s defaults (rollback journal, FULL). Figures are reported, never asserted. See
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aperio_hookspecs import DeliveryBatch, DeliveryReceipt, Event
from aperio_plugins._catalog import CatalogEntry
from aperio_plugins._dispatch import Dispatcher, DispatchPolicy, enqueue
from aperio_plugins._model import PluginKind
from aperio_plugins._state import SQLiteStateStore

TESTS = Path(__file__).resolve().parents[1] / "tests"
RAW_TABLE = (
    "CREATE TABLE raw_events (id VARCHAR(64) PRIMARY KEY, destination VARCHAR(200) NOT NULL, payload TEXT NOT NULL)"
)
RAW_INSERT = "INSERT INTO raw_events (id, destination, payload) VALUES (?, ?, ?)"


class AcceptAll:
    """A destination that takes every envelope: the dispatcher's whole path runs, the receiver costs nothing."""

    destinations: Mapping[str, CatalogEntry] = {
        "bench": CatalogEntry("bench.destination", PluginKind.DESTINATION, "bench", None, "accepts everything")
    }

    def run(self, plugin_id: str, payload: Any, *, timeout: float | None = None) -> DeliveryReceipt:
        assert isinstance(payload, DeliveryBatch)
        return DeliveryReceipt(destination=payload.destination, accepted=tuple(e.id for e in payload.envelopes))


def make_events(count: int) -> list[Event]:
    when = datetime(2026, 12, 7, tzinfo=timezone.utc)
    return [
        Event(id=f"e{n}", provider="bench", type="bench.login", occurred_at=when, raw={"user": f"u{n % 97}", "n": n})
        for n in range(count)
    ]


def outbox_round(store: Any, events: list[Event], batch_size: int) -> float:
    target = AcceptAll()
    started = time.perf_counter()
    for first in range(0, len(events), batch_size):
        enqueue(store, target.destinations, "bench", events[first : first + batch_size])
    dispatcher = Dispatcher(target, store, DispatchPolicy(claim_limit=20))
    dispatcher.drain()
    elapsed = time.perf_counter() - started
    delivered = sum(c.events for c in store.outbox_counts() if c.state.value == "delivered")
    assert delivered == len(events), f"delivered {delivered} of {len(events)}"
    store.outbox_purge()
    return len(events) / elapsed


def raw_rows(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.id, "bench", json.dumps(e.model_dump(mode="json"), separators=(",", ":"))) for e in events]


def raw_sqlite_round(path: Path, events: list[Event]) -> float:
    connection = sqlite3.connect(str(path))
    connection.execute("DROP TABLE IF EXISTS raw_events")
    connection.execute(RAW_TABLE)
    connection.commit()
    started = time.perf_counter()
    connection.executemany(RAW_INSERT, raw_rows(events))
    connection.commit()
    elapsed = time.perf_counter() - started
    connection.close()
    return len(events) / elapsed


def raw_postgres_round(url: str, events: list[Event]) -> float:
    import psycopg

    with psycopg.connect(url) as connection:
        connection.execute("DROP TABLE IF EXISTS raw_events")
        connection.execute(RAW_TABLE)
        connection.commit()
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.executemany(RAW_INSERT.replace("?", "%s"), raw_rows(events))
        connection.commit()
        elapsed = time.perf_counter() - started
    return len(events) / elapsed


def synced_commit_ms(path: Path, commits: int = 50) -> float:
    """Milliseconds per synced WAL commit of one small row: the disk's share of each `deliver`."""
    connection = sqlite3.connect(str(path), isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS probe (n INTEGER)")
    started = time.perf_counter()
    for n in range(commits):
        connection.execute("BEGIN")
        connection.execute("INSERT INTO probe (n) VALUES (?)", (n,))
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed / commits * 1000


def paired(rounds: int, outbox: Callable[[], float], raw: Callable[[], float]) -> tuple[float, float, float]:
    """Median outbox and raw ev/s and the median of each round's ratio. Each round runs the two
    back to back, so that a change of load between rounds moves both sides of a ratio."""
    pairs = [(outbox(), raw()) for _ in range(rounds)]
    return (
        statistics.median(o for o, _ in pairs),
        statistics.median(r for _, r in pairs),
        statistics.median(o / r for o, r in pairs),
    )


def report(backend: str, batch_size: int, figures: tuple[float, float, float]) -> dict[str, Any]:
    outbox, raw, ratio = figures
    verdict = "meets" if ratio >= 0.5 else "below"
    print(
        f"{backend:<13} batch {batch_size:>5}  outbox {outbox:>10,.0f} ev/s  raw executemany {raw:>10,.0f} ev/s"
        f"  ratio {ratio:.2f}x ({verdict} the 0.5x goal)"
    )
    return {"backend": backend, "batch_size": batch_size, "outbox_eps": outbox, "raw_eps": raw, "ratio": ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sqlite-synchronous", choices=["full", "normal"], default="full")
    options = parser.parse_args(argv)
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    sizes = [int(size) for size in options.batch_sizes.split(",")]
    events = make_events(options.events)
    results = []
    work = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    try:
        print(f"one synced WAL commit here: {synced_commit_ms(work / 'probe.sqlite3'):.2f} ms")
        store = SQLiteStateStore(work / "state.sqlite3")
        if options.sqlite_synchronous != "full":
            # Reaches into the store on purpose: the store offers no other mode (docs/outbox.md).
            store._connection.execute(f"PRAGMA synchronous = {options.sqlite_synchronous.upper()}")
        for size in sizes:
            figures = paired(
                options.rounds,
                lambda size=size: outbox_round(store, events, size),
                lambda: raw_sqlite_round(work / "raw.sqlite3", events),
            )
            results.append(report(f"sqlite/{options.sqlite_synchronous}", size, figures))
        store.close()
        if not options.no_postgres:
            results.extend(postgres_results(events, sizes, options.rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    return 0


def postgres_results(events: list[Event], sizes: list[int], rounds: int) -> list[dict[str, Any]]:
    sys.path.insert(0, str(TESTS))
    from postgres_server import find_bindir, start_server

    from aperio_plugins._state_postgres import PostgresStateStore

    bindir = find_bindir()
    if bindir is None:
        print("postgresql: server binaries not found, skipped")
        return []
    server = start_server(bindir)
    results = []
    try:
        store = PostgresStateStore(server.create_database("bench_outbox"))
        raw_url = server.create_database("bench_raw")
        for size in sizes:
            figures = paired(
                rounds, lambda size=size: outbox_round(store, events, size), lambda: raw_postgres_round(raw_url, events)
            )
            results.append(report("postgresql", size, figures))
        store.close()
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
    return results


if __name__ == "__main__":
    sys.exit(main())
