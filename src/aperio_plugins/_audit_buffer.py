"""Audit events held while the shared state store is out of reach, written to the trail when it is back.

A host cut off from PostgreSQL keeps serving (docs/fleet.md), and what it does meanwhile (runs,
refused changes, plugin lifecycle events) must still reach the shared trail. `HeldAudit` keeps
those events in memory, in order, up to `limit`; past it the oldest are dropped and counted, and
the count is written with the others as one `audit.held.dropped` event, so that a loss is never
silent. `flush(write)` hands them to the store in one transaction: all are written or none, and an
event leaves the buffer only once its transaction committed, so each is written once.

In memory on purpose: a host that dies during the cut loses what it held (its stdlib audit log
still has every event); a file in the state directory would be shared with the CLI on the same
machine, and a second writer makes "each once" much harder to keep.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import msgspec

HELD_LIMIT = 10_000  # events; about 2 MB with the trail's bound on one event's fields


class HeldEvent(msgspec.Struct, frozen=True):
    """One `AuditTrail.record_event` call, kept as it was made (its time is when it happened)."""

    event: str
    level: str
    occurred_at: datetime
    plugin_id: str | None
    actor: str | None
    fields: str
    host: str | None


class HeldAudit:
    """A bounded, thread-safe queue of audit events waiting for the shared trail."""

    def __init__(self, limit: int = HELD_LIMIT) -> None:
        self.limit = limit
        self._events: deque[tuple[int, HeldEvent]] = deque()
        self._next = 0  # each held event's number: a flush removes exactly the ones it wrote
        self._dropped = 0
        self._dropped_host: str | None = None
        self._lock = threading.Lock()
        # One flush at a time: two would write the same events twice.
        self._flushing = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    def hold(self, held: HeldEvent) -> None:
        with self._lock:
            if len(self._events) >= self.limit:
                self._events.popleft()
                self._dropped += 1
                self._dropped_host = held.host
            self._events.append((self._next, held))
            self._next += 1

    def flush(self, write: Callable[[Sequence[HeldEvent]], None]) -> int:
        """Write every held event with `write` (one transaction); return how many were written.

        Whatever `write` raises propagates, and the events stay held for the next flush.
        """
        with self._flushing:
            with self._lock:
                numbered = list(self._events)
                dropped, host = self._dropped, self._dropped_host
            batch = [held for _, held in numbered]
            if dropped:
                batch.append(
                    HeldEvent(
                        "audit.held.dropped",
                        "warning",
                        datetime.now(timezone.utc),
                        None,
                        None,
                        json.dumps({"dropped": dropped, "limit": self.limit}),
                        host,
                    )
                )
            if not batch:
                return 0
            write(batch)
            with self._lock:
                # Events held while this flush ran stay (and ones dropped meanwhile are gone already).
                last = numbered[-1][0] if numbered else -1
                while self._events and self._events[0][0] <= last:
                    self._events.popleft()
                self._dropped -= dropped
            return len(batch)
