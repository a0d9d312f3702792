"""The state store in a PostgreSQL database shared by a fleet of hosts (psycopg 3, psycopg-pool).

Imported only when `APERIO_STATE_URL` names PostgreSQL (the `postgres` extra). The SQL is
`SQLStateStore`'s, with its `?` parameters spelled `%s`; each call is one transaction on a pooled
connection. Migrations run on one direct connection under a session advisory lock, so that hosts
starting at once apply each step exactly once: the others wait, then find it applied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool

from ._fleet_records import CHANGES_CHANNEL
from ._migrations import MIGRATIONS, SCHEMA_VERSION_TABLE, Dialect, Migration, failed, pending
from ._state import SQLStateStore
from ._state_url import redact_url, scrub, url_secrets
from .errors import StateStoreError

# pg_advisory_lock takes a bigint; this one is "aperioMG" in ASCII, unlikely to meet another application's.
MIGRATION_LOCK_KEY = 0x61706572696F4D47
CONNECT_TIMEOUT = 5  # seconds to reach the server; a URL's own connect_timeout wins
POOL_SIZE = 10
# How long a call waits for a pooled connection (the server down: it fails after this, in one line).
POOL_TIMEOUT = 10.0


@lru_cache(maxsize=256)
def _placeholders(statement: str) -> str:
    # psycopg's parameters are %s; a literal % must be doubled. The shared SQL uses ? and no literal ?.
    return statement.replace("%", "%%").replace("?", "%s")


class PostgresStateStore(SQLStateStore):
    """Every store interface in one PostgreSQL database, safe to share between threads and hosts."""

    dialect = Dialect.POSTGRES  # the outbox's claim skips rows another host has locked

    def __init__(self, url: str, *, migrations: Sequence[Migration] = MIGRATIONS, pool_size: int = POOL_SIZE) -> None:
        """Connect, apply pending migrations, and open the pool.

        Raises `StateStoreError` (the URL redacted, never the password) for a malformed URL, an
        unreachable or refusing server, a failed migration, or a schema newer than this host's.
        """
        self.display = redact_url(url)
        self._url = url
        self._secrets = url_secrets(url)
        try:
            parameters = conninfo.conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StateStoreError(
                f"APERIO_STATE_URL {self.display} is not a usable PostgreSQL URL: {self._why(exc)}"
            ) from None
        if isinstance(parameters.get("password"), str):
            self._secrets = url_secrets(url, [str(parameters["password"])])
        options: dict[str, Any] = {}
        if "connect_timeout" not in parameters:
            options["connect_timeout"] = CONNECT_TIMEOUT
        if "application_name" not in parameters:
            options["application_name"] = "aperio-host"
        try:
            with psycopg.connect(url, autocommit=True, **options) as connection:
                self._migrate(connection, migrations)
        except psycopg.Error as exc:
            raise StateStoreError(f"cannot open state store {self.display}: {self._why(exc)}") from None
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=options,
            open=False,
            # A connection the server dropped (a restart) is replaced on checkout, not handed out.
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT,
            name="aperio-state",
        )
        try:
            self._pool.open(wait=True, timeout=POOL_TIMEOUT)
        except psycopg.Error as exc:
            self._pool.close()
            raise StateStoreError(f"cannot open state store {self.display}: {self._why(exc)}") from None

    def _why(self, exc: BaseException) -> str:
        return scrub(str(exc) or type(exc).__name__, self._url, self._secrets)

    def _migrate(self, connection: psycopg.Connection[Any], migrations: Sequence[Migration]) -> None:
        if connection.info.server_version >= 140000:
            # A host killed in the middle of a long step: without this its server process runs the
            # statement to the end before it sees the client gone, holding the lock other hosts wait on.
            connection.execute("SET client_connection_check_interval = 1000")
        connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            with connection.transaction():
                connection.execute(SCHEMA_VERSION_TABLE)
            for step in pending(self._version(connection), migrations, store=self.display):
                try:
                    with connection.transaction():
                        for statement in step.statements(Dialect.POSTGRES):
                            connection.execute(statement)
                        connection.execute("DELETE FROM schema_version")
                        connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (step.version,))
                except psycopg.Error as exc:
                    raise failed(step, self.display, self._why(exc)) from None
        finally:
            # Closing the connection releases the lock too; this is for the common case of a live one.
            with contextlib.suppress(psycopg.Error):
                connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))

    @staticmethod
    def _version(connection: psycopg.Connection[Any]) -> int:
        row = connection.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def _run(self, *statements: tuple[str, tuple[object, ...]]) -> list[tuple[object, ...]]:
        """Run `statements` in one transaction; return the rows of the last one."""
        rows: list[tuple[object, ...]] = []
        try:
            # The pool's connection commits when the block ends normally and rolls back otherwise.
            with self._pool.connection() as connection, connection.cursor() as cursor:
                for statement, parameters in statements:
                    cursor.execute(_placeholders(statement), parameters)
                    rows = list(cursor.fetchall()) if cursor.description is not None else []
        except psycopg.Error as exc:
            raise StateStoreError(f"state store {self.display}: {self._why(exc)}") from None
        return rows

    def _change_notice(self) -> tuple[tuple[str, tuple[object, ...]], ...]:
        # NOTIFY is transactional: the other hosts hear it when (and only if) the change commits.
        return (("SELECT pg_notify(?, '')", (CHANGES_CHANNEL,)),)

    def listener(self) -> ChangeListener:
        """A dedicated connection LISTENing for decisions and pins; raises `StateStoreError`."""
        return ChangeListener(self)

    def close(self) -> None:
        self._pool.close()


class ChangeListener:
    """One connection outside the pool, LISTENing on the fleet's channel.

    `wait(timeout)` returns True when a change was notified (or may have been: the listener just
    connected), False when the timeout passed quietly. A dropped connection raises `StateStoreError`;
    the caller makes a new listener after a backoff.
    """

    def __init__(self, store: PostgresStateStore) -> None:
        self._store = store
        try:
            self._connection = psycopg.connect(store._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
            self._connection.execute(f"LISTEN {CHANGES_CHANNEL}")
        except psycopg.Error as exc:
            raise StateStoreError(f"state store {store.display}: cannot listen: {store._why(exc)}") from None

    def wait(self, timeout: float) -> bool:
        try:
            for _ in self._connection.notifies(timeout=timeout, stop_after=1):
                # One at a time (a zero timeout waits forever in psycopg 3.3): a burst of changes
                # costs a few quick re-reads, each of which finds the state already applied.
                return True
        except psycopg.Error as exc:
            raise StateStoreError(f"state store {self._store.display}: {self._store._why(exc)}") from None
        return False

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._connection.close()
