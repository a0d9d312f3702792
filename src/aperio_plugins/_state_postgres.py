"""The state store in a PostgreSQL database shared by a fleet of hosts (psycopg 3, psycopg-pool).

Imported only when `APERIO_STATE_URL` names PostgreSQL (the `postgres` extra). The SQL is
`SQLStateStore`'s, with its `?` parameters spelled `%s`; each call is one transaction on a pooled
connection. Migrations run on one direct connection under a session advisory lock, so that hosts
starting at once apply each step exactly once: the others wait, then find it applied.

Cut off from the server (a partition, a restart), the store fails fast instead of making every
caller wait for the pool: the first connection error marks it `unavailable`, and from then on a
call probes the server with one direct connection at most every `PROBE_INTERVAL` and raises at
once otherwise. A probe that connects opens a fresh pool (the old one may be deep in its own
reconnect backoff) and the store is available again. Audit events recorded meanwhile are held
(`_audit_buffer`) and written, in order and once, before the next event or by the fleet agent.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from ._audit_buffer import HeldAudit, HeldEvent
from ._fleet_records import CHANGES_CHANNEL
from ._migrations import MIGRATIONS, SCHEMA_VERSION_TABLE, Dialect, Migration, failed, pending
from ._records import audit_insert
from ._state import SQLStateStore
from ._state_url import redact_url, scrub, url_secrets
from .errors import StateStoreError

# pg_advisory_lock takes a bigint; this one is "aperioMG" in ASCII, unlikely to meet another application's.
MIGRATION_LOCK_KEY = 0x61706572696F4D47
CONNECT_TIMEOUT = 5  # seconds to reach the server; a URL's own connect_timeout wins
POOL_SIZE = 10
# How long a call waits for a pooled connection (the server down: it fails after this, in one line).
POOL_TIMEOUT = 10.0
# While the server is out of reach, one direct connection tries it this often (seconds); calls in
# between fail at once, so that a request falls back to the last known state without waiting.
PROBE_INTERVAL = 0.5
# A call waits this long for a pooled connection before it checks, with one direct connection,
# whether the server answers at all: a cut-off host learns it in about a second, not POOL_TIMEOUT.
FIRST_WAIT = 1.0


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
        self._options = options
        self._pool_size = pool_size
        self._unavailable: str | None = None
        self._next_probe = 0.0
        self._probe_lock = threading.Lock()
        self.held_audit = HeldAudit()
        try:
            self._pool = self._open_pool()
        except psycopg.Error as exc:
            raise StateStoreError(f"cannot open state store {self.display}: {self._why(exc)}") from None

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[tuple[Any, ...]]]:
        pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            self._url,
            min_size=1,
            max_size=self._pool_size,
            kwargs=self._options,
            open=False,
            # A connection the server dropped (a restart) is replaced on checkout, not handed out.
            check=ConnectionPool.check_connection,
            timeout=POOL_TIMEOUT,
            name="aperio-state",
        )
        try:
            pool.open(wait=True, timeout=POOL_TIMEOUT)
        except psycopg.Error:
            pool.close()
            raise
        return pool

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

    @property
    def unavailable(self) -> str | None:
        """Why the server is out of reach (the last connection error), or None while it answers."""
        return self._unavailable

    def reconnect(self) -> None:
        """Try the server now if it was out of reach; raise `StateStoreError` if it still is."""
        self._reachable(force=True)

    def _reachable(self, *, force: bool = False) -> None:
        """Raise `StateStoreError` at once while the server is known to be out of reach, unless a
        probe (at most one every `PROBE_INTERVAL`) finds it back; then swap in a fresh pool."""
        reason = self._unavailable
        if reason is None:
            return
        away = StateStoreError(f"state store {self.display} unavailable: {reason}")
        if not force and time.monotonic() < self._next_probe:
            raise away
        # One probe at a time, and other calls never queue behind it: where the server does not
        # answer at all (packets dropped), a probe waits for the connect timeout.
        if not self._probe_lock.acquire(blocking=force):
            raise away
        try:
            if self._unavailable is None:
                return  # another thread's probe brought it back
            self._next_probe = time.monotonic() + PROBE_INTERVAL
            try:
                with psycopg.connect(self._url, autocommit=True, **self._options) as probe:
                    probe.execute("SELECT 1")
                fresh = self._open_pool()
            except psycopg.Error as exc:
                why = self._why(exc)
                self._unavailable = why.splitlines()[0] if why else type(exc).__name__
                raise StateStoreError(f"state store {self.display} unavailable: {self._unavailable}") from None
            stale, self._pool = self._pool, fresh
            self._unavailable = None
        finally:
            self._probe_lock.release()
        # Calls still waiting on the old pool fail (PoolClosed) and their callers retry or fall back.
        stale.close(timeout=1.0)

    def _checkout(
        self, pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]], stack: contextlib.ExitStack
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """A connection of `pool` entered on `stack`; raises `psycopg.OperationalError` soon (not after
        `POOL_TIMEOUT`) when the pool has none because the server cannot be reached."""
        try:
            return stack.enter_context(pool.connection(timeout=FIRST_WAIT))
        except PoolTimeout:
            # Busy, or cut off? One direct connection tells (and raises if the server is away).
            with psycopg.connect(self._url, autocommit=True, **self._options):
                pass
        return stack.enter_context(pool.connection(timeout=POOL_TIMEOUT - FIRST_WAIT))

    def _run(self, *statements: tuple[str, tuple[object, ...]]) -> list[tuple[object, ...]]:
        """Run `statements` in one transaction; return the rows of the last one."""
        self._reachable()
        pool = self._pool
        rows: list[tuple[object, ...]] = []
        try:
            # The pool's connection commits when the block ends normally and rolls back otherwise.
            with contextlib.ExitStack() as stack, self._checkout(pool, stack).cursor() as cursor:
                for statement, parameters in statements:
                    cursor.execute(_placeholders(statement), parameters)
                    rows = list(cursor.fetchall()) if cursor.description is not None else []
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # The connection, not the statement: the server is out of reach until a probe says otherwise.
            why = self._why(exc)
            # A call on a pool a probe has just replaced (closed under it) says nothing of the server.
            if pool is self._pool:
                self._next_probe = time.monotonic() + PROBE_INTERVAL
                self._unavailable = why.splitlines()[0] if why else type(exc).__name__
            raise StateStoreError(f"state store {self.display}: {why}") from None
        except psycopg.Error as exc:
            raise StateStoreError(f"state store {self.display}: {self._why(exc)}") from None
        return rows

    def record_event(
        self,
        event: str,
        *,
        level: str,
        occurred_at: datetime,
        plugin_id: str | None,
        actor: str | None,
        fields: str,
        host: str | None = None,
    ) -> None:
        """Append one event to the shared trail; while the server is out of reach, hold it.

        Events held earlier are written first, so the trail keeps the order they happened in.
        Raises `StateStoreError` only for a failure of the statement itself, never of the connection.
        """
        held = HeldEvent(event, level, occurred_at, plugin_id, actor, fields, host)
        try:
            if len(self.held_audit):
                self.flush_held_audit()
            if not len(self.held_audit):
                super().record_event(
                    event,
                    level=level,
                    occurred_at=occurred_at,
                    plugin_id=plugin_id,
                    actor=actor,
                    fields=fields,
                    host=host,
                )
                return
        except StateStoreError:
            if self._unavailable is None:
                raise
        self.held_audit.hold(held)

    def flush_held_audit(self) -> int:
        """Write the held audit events in one transaction; return how many. Raises `StateStoreError`."""
        return self.held_audit.flush(self._write_held)

    def _write_held(self, batch: Sequence[HeldEvent]) -> None:
        self._run(
            *(
                audit_insert(
                    held.event, held.level, held.occurred_at, held.plugin_id, held.actor, held.fields, held.host
                )
                for held in batch
            )
        )

    def _change_notice(self) -> tuple[tuple[str, tuple[object, ...]], ...]:
        # NOTIFY is transactional: the other hosts hear it when (and only if) the change commits.
        return (("SELECT pg_notify(?, '')", (CHANGES_CHANNEL,)),)

    def listener(self) -> ChangeListener:
        """A dedicated connection LISTENing for decisions and pins; raises `StateStoreError`."""
        return ChangeListener(self)

    def close(self) -> None:
        if len(self.held_audit):
            # A last chance for what the host held; if the server is still away they are lost,
            # and the stdlib audit log is where they remain.
            with contextlib.suppress(StateStoreError):
                self.flush_held_audit()
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
