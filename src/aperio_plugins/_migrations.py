"""The state store's schema as numbered migrations, shared by the SQLite and PostgreSQL backends.

A store records the number of the last migration applied in `schema_version`. On start a backend
applies every later step, each in its own transaction together with the new version number, so a
step interrupted half-way leaves the store at the previous version with nothing of the step applied
(SQLite and PostgreSQL both roll back DDL). A store whose version is above the newest step was
written by a newer host and is refused: this host would misread it.

Append steps; never edit one that has shipped (stores in the field have run it). Each step's SQL
is written once when it is portable, per database when it is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import msgspec

from .errors import StateStoreError


class Dialect(str, Enum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"


class Migration(msgspec.Struct, frozen=True):
    """One numbered step: the statements that bring a store of version `version - 1` to `version`."""

    version: int
    summary: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect is Dialect.SQLITE else self.postgres


def _portable(version: int, summary: str, *statements: str) -> Migration:
    return Migration(version, summary, statements, statements)


# Kept outside the numbered steps: the backends create it (under their lock) before reading it.
SCHEMA_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"

# Steps 1 and 2 keep IF NOT EXISTS because stores made before numbered migrations created these
# tables on every start; a later step need not.
_BASE = (
    "CREATE TABLE IF NOT EXISTS plugin_flags ("
    " plugin_id VARCHAR(200) PRIMARY KEY,"
    " enabled INTEGER NOT NULL,"
    " updated_at VARCHAR(40) NOT NULL)",
    "CREATE TABLE IF NOT EXISTS plugin_isolation ("
    " plugin_id VARCHAR(200) PRIMARY KEY,"
    " isolation VARCHAR(20) NOT NULL,"
    " updated_at VARCHAR(40) NOT NULL)",
    "CREATE TABLE IF NOT EXISTS plugin_kv ("
    " plugin_id VARCHAR(200) NOT NULL,"
    " item_key VARCHAR(500) NOT NULL,"
    " item_value TEXT NOT NULL,"
    " PRIMARY KEY (plugin_id, item_key))",
    "CREATE TABLE IF NOT EXISTS registry_indexes ("
    " source VARCHAR(2048) PRIMARY KEY,"
    " format_version INTEGER NOT NULL,"
    " updated_at VARCHAR(40) NOT NULL,"
    " content_sha256 VARCHAR(64) NOT NULL,"
    " seen_at VARCHAR(40) NOT NULL)",
)

_TOKENS = (
    "CREATE TABLE IF NOT EXISTS api_tokens ("
    " name VARCHAR(100) PRIMARY KEY,"
    " token_sha256 VARCHAR(64) NOT NULL UNIQUE,"
    " permissions VARCHAR(500) NOT NULL,"
    " created_at VARCHAR(40) NOT NULL,"
    " expires_at VARCHAR(40),"
    " revoked_at VARCHAR(40))"
)
_AUDIT_INDEXES = (
    "CREATE INDEX IF NOT EXISTS audit_events_plugin ON audit_events (plugin_id, id)",
    "CREATE INDEX IF NOT EXISTS audit_events_actor ON audit_events (actor, id)",
    "CREATE INDEX IF NOT EXISTS audit_events_event ON audit_events (event, id)",
)


def _audit_table(id_column: str) -> str:
    return (
        "CREATE TABLE IF NOT EXISTS audit_events ("
        f" id {id_column},"
        " occurred_at VARCHAR(40) NOT NULL,"
        " event VARCHAR(200) NOT NULL,"
        " level VARCHAR(20) NOT NULL,"
        " plugin_id VARCHAR(200),"
        " actor VARCHAR(100),"
        " fields TEXT NOT NULL)"
    )


# The fleet (issue 14, decisions and the desired plugin set): which host an audited change was made
# on, the fleet's pinned lock (one row), and each serving host's heartbeat and what it runs.
_FLEET = (
    "ALTER TABLE audit_events ADD COLUMN host VARCHAR(200)",
    "CREATE TABLE fleet_lock ("
    " id INTEGER PRIMARY KEY,"
    " revision INTEGER NOT NULL,"
    " lock_text TEXT NOT NULL,"
    " pinned_at VARCHAR(40) NOT NULL,"
    " pinned_by VARCHAR(100),"
    " pinned_on VARCHAR(200))",
    "CREATE TABLE fleet_hosts ("
    " host_name VARCHAR(200) PRIMARY KEY,"
    " started_at VARCHAR(40) NOT NULL,"
    " heartbeat_at VARCHAR(40) NOT NULL,"
    " lock_revision INTEGER,"
    " report TEXT NOT NULL)",
)

# The durable outbox: one row per batch; its id is the idempotency key destinations receive. Times
# that are compared (due, lease) are epoch seconds so that SQLite and PostgreSQL compare numbers.
_OUTBOX = (
    "CREATE TABLE outbox_batches ("
    " id VARCHAR(64) PRIMARY KEY,"
    " destination VARCHAR(200) NOT NULL,"
    " payload TEXT NOT NULL,"
    " events INTEGER NOT NULL,"
    " state VARCHAR(20) NOT NULL,"
    " attempts INTEGER NOT NULL,"
    " next_attempt_at DOUBLE PRECISION NOT NULL,"
    " lease_owner VARCHAR(200),"
    " lease_until DOUBLE PRECISION,"
    " last_error TEXT,"
    " created_at VARCHAR(40) NOT NULL,"
    " updated_at VARCHAR(40) NOT NULL)",
    "CREATE INDEX outbox_batches_due ON outbox_batches (state, next_attempt_at)",
)

MIGRATIONS: tuple[Migration, ...] = (
    _portable(1, "operator decisions, plugin KV and registry marks", *_BASE),
    Migration(
        2,
        "the operator API's tokens and audit trail",
        # The audit id is the one generated column: SQLite's rowid alias, PostgreSQL's identity.
        sqlite=(_TOKENS, _audit_table("INTEGER PRIMARY KEY"), *_AUDIT_INDEXES),
        postgres=(_TOKENS, _audit_table("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"), *_AUDIT_INDEXES),
    ),
    _portable(3, "the fleet: audit host, pinned lock, host heartbeats", *_FLEET),
    _portable(4, "the durable delivery outbox", *_OUTBOX),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def pending(current: int, migrations: Sequence[Migration], *, store: str) -> list[Migration]:
    """Return the steps after `current`, in order.

    Raises `StateStoreError` when `current` is above the newest step (a newer host wrote the store).
    """
    newest = migrations[-1].version if migrations else 0
    if current > newest:
        raise StateStoreError(
            f"state store {store} has schema version {current}, newer than this host's {newest};"
            " upgrade aperio-plugins on this host"
        )
    return [step for step in migrations if step.version > current]


def failed(step: Migration, store: str, reason: str) -> StateStoreError:
    """The error for a step whose transaction failed and was rolled back."""
    return StateStoreError(
        f"state store {store}: migration {step.version} ({step.summary}) failed and was rolled back,"
        f" the store stays at schema version {step.version - 1}: {reason}"
    )
