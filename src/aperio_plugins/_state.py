"""The host's state store: operator decisions and plugin key-value data that outlive a process.

`StateStore` is the interface, made of the three small ones its users need
(`OperatorDecisions`, `PluginKV`, `RegistryMarks`); `SQLiteStateStore` the embedded default. The
operator API's `TokenStore` and `AuditTrail` (in `_records`) are further small interfaces that
every store implements too. The SQL is portable and lives in `SQLStateStore`, so that the shared
PostgreSQL store (`_state_postgres`) differs only in how it connects, runs and migrates.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import msgspec

from ._fleet_records import SQLFleetRecords
from ._migrations import MIGRATIONS, SCHEMA_VERSION_TABLE, Dialect, Migration, failed, pending
from ._migrations import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported: the version this host writes
from ._model import Isolation
from ._outbox import SQLOutbox
from ._records import SQLRecords
from .errors import StateStoreError

STATE_FILE_NAME = "state.sqlite3"
# How long a connection waits for another process's write lock (the CLI and `aperio serve` share
# the file) before `database is locked`; a write transaction here lasts milliseconds.
BUSY_TIMEOUT_MS = 10_000

_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())


def configure_sqlite(connection: sqlite3.Connection, path: Path) -> None:
    """Set the pragmas every connection to the state store uses; call it before any transaction.

    - `busy_timeout`: wait for another process's write lock instead of failing at once.
    - `journal_mode=WAL`: a commit appends to the log and syncs it once, where the rollback journal
      syncs the journal, the database and the directory; readers and the one writer no longer
      block each other. The mode is kept in the file, so a database created in rollback-journal
      mode is switched here, on its first open by this version.
    - `synchronous=FULL`: the log is synced at every commit, so a committed transaction (a queued
      outbox batch, an operator's decision) survives a power loss, not only a killed process.
      NORMAL would sync only at checkpoints; see docs/outbox.md for why it was not chosen.
    """
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    try:
        (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        mode = f"unchanged ({exc})"
    if str(mode).lower() != "wal":
        # Another process holding the file in rollback mode keeps it there; the store still works,
        # only slower, and a later open switches it. Not an error: nothing is wrong with the file.
        _log.warning("state store %s stays in journal mode %s: WAL could not be enabled", path, mode)
    connection.execute("PRAGMA synchronous = FULL")


class SeenIndex(msgspec.Struct, frozen=True):
    """The newest state of a plugin index this host has accepted (for rollback protection)."""

    format_version: int
    updated_at: datetime
    content_sha256: str


class OperatorDecisions(Protocol):
    """The operator's decisions per plugin: enable flags and isolation choices (the host, the CLI, the API)."""

    def enabled_flags(self) -> dict[str, bool]: ...
    def set_enabled(self, plugin_id: str, enabled: bool) -> None: ...
    def isolation_overrides(self) -> dict[str, Isolation]: ...
    def set_isolation(self, plugin_id: str, isolation: Isolation | None) -> None: ...
    def forget_plugin(self, plugin_id: str, *, purge_data: bool = True) -> None: ...


class PluginKV(Protocol):
    """The key-value data each plugin keeps, namespaced by plugin id (an invocation context's `kv`)."""

    def kv_get(self, plugin_id: str, key: str) -> str | None: ...
    def kv_set(self, plugin_id: str, key: str, value: str) -> None: ...
    def kv_delete(self, plugin_id: str, key: str) -> None: ...
    def kv_keys(self, plugin_id: str, prefix: str = "") -> list[str]: ...


class RegistryMarks(Protocol):
    """The newest state of each plugin index this host accepted (the registry client's rollback check)."""

    def seen_index(self, source: str) -> SeenIndex | None: ...
    def record_index(self, source: str, seen: SeenIndex) -> None: ...


class StateStore(OperatorDecisions, PluginKV, RegistryMarks, Protocol):
    """Everything the host persists, in one store. Implementations must be safe to share between threads.

    Each user asks only for the part it needs: `OperatorDecisions`, `PluginKV` or `RegistryMarks`.
    """

    def close(self) -> None: ...


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class SQLStateStore(SQLRecords, SQLFleetRecords, SQLOutbox):
    """Every store interface over `_run` (one transaction per call), in SQL that SQLite and
    PostgreSQL both run; a backend supplies `_run` and `close`."""

    def enabled_flags(self) -> dict[str, bool]:
        rows = self._run(("SELECT plugin_id, enabled FROM plugin_flags", ()))
        return {str(plugin_id): bool(enabled) for plugin_id, enabled in rows}

    def set_enabled(self, plugin_id: str, enabled: bool) -> None:
        # An upsert, not delete-then-insert: under PostgreSQL's READ COMMITTED two hosts deleting
        # then inserting the same id at once collide on the primary key. Writing the flag it already
        # has changes nothing, so a host applying a decision it received does not make it new again.
        self._run(
            (
                "INSERT INTO plugin_flags (plugin_id, enabled, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (plugin_id) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at"
                " WHERE plugin_flags.enabled <> excluded.enabled",
                (plugin_id, 1 if enabled else 0, _now()),
            ),
            *self._change_notice(),
        )

    def isolation_overrides(self) -> dict[str, Isolation]:
        rows = self._run(("SELECT plugin_id, isolation FROM plugin_isolation", ()))
        return {str(plugin_id): Isolation(str(isolation)) for plugin_id, isolation in rows}

    def set_isolation(self, plugin_id: str, isolation: Isolation | None) -> None:
        """Record the operator's isolation for one plugin; None returns it to the host default."""
        if isolation is None:
            self._run(("DELETE FROM plugin_isolation WHERE plugin_id = ?", (plugin_id,)), *self._change_notice())
            return
        self._run(
            (
                "INSERT INTO plugin_isolation (plugin_id, isolation, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (plugin_id) DO UPDATE SET isolation = excluded.isolation,"
                " updated_at = excluded.updated_at WHERE plugin_isolation.isolation <> excluded.isolation",
                (plugin_id, isolation.value, _now()),
            ),
            *self._change_notice(),
        )

    def forget_plugin(self, plugin_id: str, *, purge_data: bool = True) -> None:
        """Drop the operator's decisions about a plugin and, with `purge_data`, the data it stored."""
        statements: list[tuple[str, tuple[object, ...]]] = [
            ("DELETE FROM plugin_isolation WHERE plugin_id = ?", (plugin_id,)),
            ("DELETE FROM plugin_flags WHERE plugin_id = ?", (plugin_id,)),
        ]
        if purge_data:
            statements.append(("DELETE FROM plugin_kv WHERE plugin_id = ?", (plugin_id,)))
        self._run(*statements, *self._change_notice())

    def kv_get(self, plugin_id: str, key: str) -> str | None:
        rows = self._run(("SELECT item_value FROM plugin_kv WHERE plugin_id = ? AND item_key = ?", (plugin_id, key)))
        return str(rows[0][0]) if rows else None

    def kv_set(self, plugin_id: str, key: str, value: str) -> None:
        self._run(
            (
                "INSERT INTO plugin_kv (plugin_id, item_key, item_value) VALUES (?, ?, ?)"
                " ON CONFLICT (plugin_id, item_key) DO UPDATE SET item_value = excluded.item_value",
                (plugin_id, key, value),
            )
        )

    def kv_delete(self, plugin_id: str, key: str) -> None:
        self._run(("DELETE FROM plugin_kv WHERE plugin_id = ? AND item_key = ?", (plugin_id, key)))

    def kv_keys(self, plugin_id: str, prefix: str = "") -> list[str]:
        # Prefix matching in Python rather than LIKE, whose escaping differs between databases.
        rows = self._run(("SELECT item_key FROM plugin_kv WHERE plugin_id = ? ORDER BY item_key", (plugin_id,)))
        return [str(key) for (key,) in rows if str(key).startswith(prefix)]

    def seen_index(self, source: str) -> SeenIndex | None:
        rows = self._run(
            ("SELECT format_version, updated_at, content_sha256 FROM registry_indexes WHERE source = ?", (source,))
        )
        if not rows:
            return None
        format_version, updated_at, content_sha256 = rows[0]
        return SeenIndex(int(str(format_version)), datetime.fromisoformat(str(updated_at)), str(content_sha256))

    def record_index(self, source: str, seen: SeenIndex) -> None:
        self._run(
            (
                "INSERT INTO registry_indexes (source, format_version, updated_at, content_sha256, seen_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET"
                " format_version = excluded.format_version, updated_at = excluded.updated_at,"
                " content_sha256 = excluded.content_sha256, seen_at = excluded.seen_at",
                (source, seen.format_version, seen.updated_at.isoformat(), seen.content_sha256, _now()),
            ),
        )

    def close(self) -> None:
        raise NotImplementedError  # provided by the backend


class SQLiteStateStore(SQLStateStore):
    """A `StateStore` (and the API's `TokenStore` and `AuditTrail`) in one SQLite file, created with
    owner-only permissions."""

    def __init__(self, path: Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        """Open (creating if needed) and migrate the store at `path`; `migrations` is for tests.

        Raises `StateStoreError` for an unreadable file, a failed migration, or a newer schema.
        """
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            # Owner-only before WAL is enabled: SQLite gives the -wal and -shm files the database's mode.
            path.chmod(0o600)
            configure_sqlite(self._connection, path)
            self._migrate(migrations)
        except sqlite3.DatabaseError as exc:
            raise StateStoreError(
                f"state store {path} is unreadable ({exc}); move it aside to start with empty state,"
                " or restore it from a backup"
            ) from None
        except OSError as exc:
            raise StateStoreError(f"cannot open state store {path}: {exc.strerror or exc}") from None
        except StateStoreError:
            self._connection.close()
            raise

    @classmethod
    def in_directory(cls, state_dir: Path) -> SQLiteStateStore:
        return cls(state_dir / STATE_FILE_NAME)

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        # BEGIN IMMEDIATE takes SQLite's write lock before the version is read, so two hosts
        # starting on one file apply each step once: the second waits, then finds it done.
        with self._transaction("BEGIN IMMEDIATE") as cursor:
            cursor.execute(SCHEMA_VERSION_TABLE)
            current = self._version(cursor)
        for step in pending(current, migrations, store=str(self.path)):
            try:
                with self._transaction("BEGIN IMMEDIATE") as cursor:
                    if self._version(cursor) >= step.version:
                        continue
                    for statement in step.statements(Dialect.SQLITE):
                        cursor.execute(statement)
                    cursor.execute("DELETE FROM schema_version")
                    cursor.execute("INSERT INTO schema_version (version) VALUES (?)", (step.version,))
            except sqlite3.DatabaseError as exc:
                raise failed(step, str(self.path), str(exc)) from None

    @staticmethod
    def _version(cursor: sqlite3.Cursor) -> int:
        row = cursor.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    @contextmanager
    def _transaction(self, begin: str = "BEGIN") -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection.cursor()
            try:
                cursor.execute(begin)
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()

    def _run(self, *statements: tuple[str, tuple[object, ...]]) -> list[tuple[object, ...]]:
        """Run `statements` in one transaction; return the rows of the last one."""
        rows: list[tuple[object, ...]] = []
        # A transaction that writes takes the write lock at BEGIN. Taken later, by a write after a
        # read, it fails at once with `database is locked` when another process committed in
        # between (WAL cannot upgrade a stale snapshot), without waiting for the busy timeout.
        writes = any(not statement.lstrip().upper().startswith("SELECT") for statement, _ in statements)
        try:
            with self._transaction("BEGIN IMMEDIATE" if writes else "BEGIN") as cursor:
                for statement, parameters in statements:
                    rows = list(cursor.execute(statement, parameters).fetchall())
        except sqlite3.DatabaseError as exc:
            raise StateStoreError(f"state store {self.path}: {exc}") from None
        return rows

    def close(self) -> None:
        with self._lock:
            self._connection.close()
