"""One store suite, two backends: every test taking `backend` runs against SQLite and a real PostgreSQL."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from postgres_server import PostgresServer, postgres_server  # noqa: F401 (the fixture, registered by this import)

from aperio_plugins._migrations import MIGRATIONS, Migration
from aperio_plugins._state import SQLiteStateStore

_databases = itertools.count(1)


@dataclass
class Backend:
    """Where one test's store lives, how to open it (again), and a raw side door for the test itself."""

    name: str
    location: str  # a file path (sqlite) or a URL (postgres)
    server: PostgresServer | None = None

    def open(self, migrations: Sequence[Migration] = MIGRATIONS) -> Any:
        if self.name == "sqlite":
            return SQLiteStateStore(Path(self.location), migrations=migrations)
        from aperio_plugins._state_postgres import PostgresStateStore

        return PostgresStateStore(self.location, migrations=migrations)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run `statement` on a connection of its own (not the store's) and return its rows."""
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as connection:
                return connection.execute(statement).fetchall()
        import psycopg

        with psycopg.connect(self.location, autocommit=True) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description is not None else []

    def tables(self) -> set[str]:
        if self.name == "sqlite":
            rows = self.sql("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            rows = self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {str(name) for (name,) in rows}

    def version(self) -> list[int]:
        return [int(version) for (version,) in self.sql("SELECT version FROM schema_version")]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "state.sqlite3"))
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return Backend("postgres", server.create_database(f"store_{next(_databases)}"), server)


@pytest.fixture
def open_store(backend: Backend) -> Iterator[Callable[..., Any]]:
    """Open the test's store (as often as asked, like several hosts); every one is closed at the end."""
    opened: list[Any] = []

    def _open(migrations: Sequence[Migration] = MIGRATIONS) -> Any:
        store = backend.open(migrations)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()
