"""The fleet's records in the state store: the pinned lock every host converges to, and each
serving host's heartbeat with what it runs and what it could not install.

Portable SQL over the store's `_run`, mixed into `SQLStateStore` like `SQLRecords`. Times are
ISO 8601 in UTC, which compare correctly as text on both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Protocol

import msgspec

# The PostgreSQL channel a decision's or a pin's transaction notifies on (delivered at its commit).
CHANGES_CHANNEL = "aperio_fleet_changes"


class PinnedLock(msgspec.Struct, frozen=True):
    """The fleet's desired plugin set: a lock file's JSON text and who pinned it, where and when."""

    revision: int
    lock_text: str
    pinned_at: datetime
    pinned_by: str | None
    pinned_on: str | None


class HostBeat(msgspec.Struct, frozen=True):
    """A serving host's last heartbeat; `report` is its JSON text (plugins, refusals, drift)."""

    host_name: str
    started_at: datetime
    heartbeat_at: datetime
    lock_revision: int | None
    report: str


class FleetRecords(Protocol):
    """The fleet's records: the pinned lock and the hosts' heartbeats (every backend keeps them)."""

    def pin_lock(self, lock_text: str, *, pinned_by: str | None, pinned_on: str | None) -> int: ...
    def pinned_lock(self) -> PinnedLock | None: ...
    def beat(self, host_name: str, *, started_at: datetime, lock_revision: int | None, report: str) -> None: ...
    def live_hosts(self, ttl: timedelta) -> list[HostBeat]: ...
    def forget_host(self, host_name: str) -> None: ...


class SQLFleetRecords:
    """Fleet records over the state store's `_run` (one transaction per call)."""

    def _run(self, *statements: tuple[str, tuple[object, ...]]) -> list[tuple[object, ...]]:
        raise NotImplementedError  # provided by the store this is mixed into

    def _change_notice(self) -> tuple[tuple[str, tuple[object, ...]], ...]:
        """Statements that wake the other hosts at commit; none on SQLite, which they poll."""
        return ()

    def pin_lock(self, lock_text: str, *, pinned_by: str | None, pinned_on: str | None) -> int:
        """Store `lock_text` as the fleet's desired plugin set; return its new revision."""
        # The notice first, so that the rows returned are the insert's; it is delivered at commit anyway.
        rows = self._run(
            *self._change_notice(),
            (
                "INSERT INTO fleet_lock (id, revision, lock_text, pinned_at, pinned_by, pinned_on)"
                " VALUES (1, 1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET revision = fleet_lock.revision + 1,"
                " lock_text = excluded.lock_text, pinned_at = excluded.pinned_at,"
                " pinned_by = excluded.pinned_by, pinned_on = excluded.pinned_on RETURNING revision",
                (lock_text, datetime.now(timezone.utc).isoformat(), pinned_by, pinned_on),
            ),
        )
        return int(str(rows[0][0]))

    def pinned_lock(self) -> PinnedLock | None:
        rows = self._run(
            ("SELECT revision, lock_text, pinned_at, pinned_by, pinned_on FROM fleet_lock WHERE id = 1", ())
        )
        if not rows:
            return None
        revision, text, pinned_at, pinned_by, pinned_on = rows[0]
        return PinnedLock(
            int(str(revision)),
            str(text),
            datetime.fromisoformat(str(pinned_at)),
            None if pinned_by is None else str(pinned_by),
            None if pinned_on is None else str(pinned_on),
        )

    def beat(self, host_name: str, *, started_at: datetime, lock_revision: int | None, report: str) -> None:
        """Record that `host_name` is alive now, with what it runs."""
        now = datetime.now(timezone.utc).isoformat()
        self._run(
            (
                "INSERT INTO fleet_hosts (host_name, started_at, heartbeat_at, lock_revision, report)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (host_name) DO UPDATE SET started_at = excluded.started_at,"
                " heartbeat_at = excluded.heartbeat_at, lock_revision = excluded.lock_revision,"
                " report = excluded.report",
                (host_name, started_at.isoformat(), now, lock_revision, report),
            )
        )

    def live_hosts(self, ttl: timedelta) -> list[HostBeat]:
        """Hosts that beat within `ttl`; older rows are deleted (their host stopped or was cut off)."""
        cutoff = (datetime.now(timezone.utc) - ttl).isoformat()
        rows = self._run(
            ("DELETE FROM fleet_hosts WHERE heartbeat_at < ?", (cutoff,)),
            (
                "SELECT host_name, started_at, heartbeat_at, lock_revision, report FROM fleet_hosts ORDER BY host_name",
                (),
            ),
        )
        return [_beat(row) for row in rows]

    def forget_host(self, host_name: str) -> None:
        """Remove a host that stopped cleanly, so that it does not linger until its TTL."""
        self._run(("DELETE FROM fleet_hosts WHERE host_name = ?", (host_name,)))


def _beat(row: Sequence[object]) -> HostBeat:
    host_name, started_at, heartbeat_at, lock_revision, report = row
    return HostBeat(
        str(host_name),
        datetime.fromisoformat(str(started_at)),
        datetime.fromisoformat(str(heartbeat_at)),
        None if lock_revision is None else int(str(lock_revision)),
        str(report),
    )
