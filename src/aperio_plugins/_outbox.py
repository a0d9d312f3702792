"""The durable outbox: batches for destinations, kept in the state store until delivered or dead-lettered.

`Outbox` is one more small store interface beside `OperatorDecisions` and the others; `SQLOutbox`
implements it in SQL both backends run, over the store's `_run` (one transaction per call). A
batch's id is its idempotency key: the same on every redelivery.

Several hosts share one outbox. A host claims due batches by setting a lease (owner and expiry) in
one statement; on PostgreSQL the candidate rows are picked `FOR UPDATE SKIP LOCKED`, so hosts
claiming at once take different batches without waiting on each other; SQLite has one writer at a
time, which is enough. A host that dies mid-delivery leaves its lease to expire, and the batch is
claimed again. Updates after delivery name the lease owner, so a host whose lease was taken over
cannot overwrite the new owner's outcome.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone
from enum import Enum
from functools import cached_property
from typing import Any, Protocol

import msgspec

from ._migrations import Dialect


class BatchState(str, Enum):
    QUEUED = "queued"
    DELIVERED = "delivered"
    DEAD = "dead"


class ClaimedBatch(msgspec.Struct, frozen=True, dict=True):
    """A batch this host holds a lease on: deliver it, then complete, retry or dead-letter it.

    `payload` is the stored JSON document (`{"envelopes": [...], "config": {...}}`); `envelopes`
    and `config` parse it on first use, which a batch delivered in full never needs.
    """

    id: str
    destination: str
    payload: str
    attempts: int

    @cached_property
    def _document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.payload)
        return document

    @property
    def envelopes(self) -> tuple[dict[str, Any], ...]:
        return tuple(self._document["envelopes"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._document["config"])

    def delivery_json(self) -> str:
        """The batch as a `DeliveryBatch` JSON document, with its id as the idempotency key.

        Spliced, not re-encoded: the stored payload is an object this module wrote, and validating
        JSON text is several times faster than validating the parsed dicts (pydantic checks a
        `JsonValue` read from JSON in Rust, one read from Python objects value by value).
        """
        head = json.dumps({"destination": self.destination, "idempotency_key": self.id}, separators=(",", ":"))
        return f"{head[:-1]},{self.payload[1:]}"


class OutboxCount(msgspec.Struct, frozen=True):
    """How many batches (and events) one destination has in one state."""

    destination: str
    state: BatchState
    batches: int
    events: int


class DeadBatch(msgspec.Struct, frozen=True):
    """A dead-lettered batch and the receiver's reason."""

    id: str
    destination: str
    events: int
    attempts: int
    reason: str


class Outbox(Protocol):
    """Durable batches for destinations, shared by every host on the store (the dispatcher, the CLI, the API)."""

    def outbox_enqueue(self, destination: str, envelopes: list[dict[str, Any]], config: dict[str, Any]) -> str: ...
    def outbox_enqueue_json(self, destination: str, payload: str, events: int) -> str: ...
    def outbox_claim(self, owner: str, lease: float, limit: int) -> list[ClaimedBatch]: ...
    def outbox_complete(self, batch_id: str, owner: str) -> bool: ...
    def outbox_complete_many(self, batch_ids: list[str], owner: str) -> set[str]: ...
    def outbox_reschedule(
        self, batch_id: str, owner: str, envelopes: list[dict[str, Any]], delay: float, reason: str, *, counted: bool
    ) -> bool: ...
    def outbox_dead_letter(self, batch_id: str, owner: str, envelopes: list[dict[str, Any]], reason: str) -> bool: ...
    def outbox_dead_split(
        self, batch_id: str, destination: str, envelopes: list[dict[str, Any]], config: dict[str, Any], reason: str
    ) -> str: ...
    def outbox_counts(self) -> list[OutboxCount]: ...
    def outbox_dead(self, destination: str | None = None) -> list[DeadBatch]: ...
    def outbox_retry(self, destination: str | None = None, batch_id: str | None = None) -> int: ...
    def outbox_purge(self, *, dead: bool = False, destination: str | None = None) -> int: ...


def _iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _payload(envelopes: list[dict[str, Any]], config: dict[str, Any]) -> str:
    return json.dumps({"envelopes": envelopes, "config": config}, separators=(",", ":"), allow_nan=False)


def _filters(**columns: str | None) -> tuple[str, tuple[object, ...]]:
    # Built in Python: PostgreSQL cannot type a bare `? IS NULL` parameter.
    given = {column: value for column, value in columns.items() if value is not None}
    return "".join(f" AND {column} = ?" for column in given), tuple(given.values())


_CANDIDATES = (
    "SELECT id FROM outbox_batches WHERE state = 'queued' AND next_attempt_at <= ?"
    " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at LIMIT ?"
)


class SQLOutbox:
    """`Outbox` over the store's `_run`; a backend sets `dialect` (the claim is the one statement that differs)."""

    dialect: Dialect = Dialect.SQLITE

    def _run(self, *statements: tuple[str, tuple[object, ...]]) -> list[tuple[object, ...]]:
        raise NotImplementedError  # provided by the backend

    def outbox_enqueue(self, destination: str, envelopes: list[dict[str, Any]], config: dict[str, Any]) -> str:
        """Store one batch (committed when this returns); return its id, the idempotency key."""
        return self.outbox_enqueue_json(destination, _payload(envelopes, config), len(envelopes))

    def outbox_enqueue_json(self, destination: str, payload: str, events: int) -> str:
        """Store one batch already encoded as `{"envelopes": [...], "config": {...}}` (`events` envelopes);
        committed when this returns; return its id, the idempotency key."""
        batch_id = uuid.uuid4().hex
        now = _iso()
        self._run(
            (
                "INSERT INTO outbox_batches (id, destination, payload, events, state, attempts, next_attempt_at,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?)",
                (batch_id, destination, payload, events, time.time(), now, now),
            )
        )
        return batch_id

    def outbox_claim(self, owner: str, lease: float, limit: int) -> list[ClaimedBatch]:
        """Lease up to `limit` due batches to `owner` for `lease` seconds, counting an attempt on each."""
        now = time.time()
        # Counting the attempt at claim, not after: a batch that kills every host delivering it
        # still reaches the dead letters.
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect is Dialect.POSTGRES else ""
        rows = self._run(
            (
                "UPDATE outbox_batches SET lease_owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ?"  # noqa: S608 - fixed SQL fragments, values stay parameters
                f" WHERE id IN ({_CANDIDATES}{lock}) RETURNING id, destination, payload, attempts",
                (owner, now + lease, _iso(), now, now, limit),
            )
        )
        return [
            ClaimedBatch(str(batch_id), str(destination), str(payload), int(str(attempts)))
            for batch_id, destination, payload, attempts in rows
        ]

    def outbox_complete(self, batch_id: str, owner: str) -> bool:
        """Mark a leased batch delivered; False if `owner` no longer holds its lease."""
        return self._settle(batch_id, owner, "state = 'delivered', last_error = NULL", ())

    def outbox_complete_many(self, batch_ids: list[str], owner: str) -> set[str]:
        """Mark leased batches delivered in one transaction; return the ids `owner` still held."""
        if not batch_ids:
            return set()
        marks = ", ".join("?" for _ in batch_ids)
        rows = self._run(
            (
                "UPDATE outbox_batches SET state = 'delivered', last_error = NULL, lease_owner = NULL,"  # noqa: S608 - fixed SQL fragments, values stay parameters
                f" lease_until = NULL, updated_at = ? WHERE id IN ({marks}) AND lease_owner = ? AND state = 'queued'"
                " RETURNING id",
                (_iso(), *batch_ids, owner),
            )
        )
        return {str(batch_id) for (batch_id,) in rows}

    def outbox_reschedule(
        self, batch_id: str, owner: str, envelopes: list[dict[str, Any]], delay: float, reason: str, *, counted: bool
    ) -> bool:
        """Put a leased batch back with only `envelopes` left, due in `delay` s; `counted=False` refunds the attempt."""
        refund = "" if counted else ", attempts = attempts - 1"
        return self._settle(
            batch_id,
            owner,
            f"payload = ?, events = ?, next_attempt_at = ?, last_error = ?{refund}",
            (self._repacked(batch_id, envelopes), len(envelopes), time.time() + delay, reason),
        )

    def outbox_dead_letter(self, batch_id: str, owner: str, envelopes: list[dict[str, Any]], reason: str) -> bool:
        """Dead-letter a leased batch with the envelopes that were refused and the receiver's reason."""
        return self._settle(
            batch_id,
            owner,
            "state = 'dead', payload = ?, events = ?, last_error = ?",
            (self._repacked(batch_id, envelopes), len(envelopes), reason),
        )

    def outbox_dead_split(
        self, batch_id: str, destination: str, envelopes: list[dict[str, Any]], config: dict[str, Any], reason: str
    ) -> str:
        """Dead-letter part of a batch as a row of its own (the rest retries); return the new row's id."""
        part_id = f"{batch_id[:40]}-{uuid.uuid4().hex[:12]}"
        now = _iso()
        self._run(
            (
                "INSERT INTO outbox_batches (id, destination, payload, events, state, attempts, next_attempt_at,"
                " last_error, created_at, updated_at) VALUES (?, ?, ?, ?, 'dead', 1, ?, ?, ?, ?)",
                (part_id, destination, _payload(envelopes, config), len(envelopes), time.time(), reason, now, now),
            )
        )
        return part_id

    def _repacked(self, batch_id: str, envelopes: list[dict[str, Any]]) -> str:
        rows = self._run(("SELECT payload FROM outbox_batches WHERE id = ?", (batch_id,)))
        config = json.loads(str(rows[0][0]))["config"] if rows else {}
        return _payload(envelopes, config)

    def _settle(self, batch_id: str, owner: str, assignments: str, values: tuple[object, ...]) -> bool:
        rows = self._run(
            (
                f"UPDATE outbox_batches SET {assignments}, lease_owner = NULL, lease_until = NULL, updated_at = ?"  # noqa: S608 - fixed SQL fragments, values stay parameters
                " WHERE id = ? AND lease_owner = ? AND state = 'queued' RETURNING id",
                (*values, _iso(), batch_id, owner),
            )
        )
        return bool(rows)

    def outbox_counts(self) -> list[OutboxCount]:
        rows = self._run(
            (
                "SELECT destination, state, COUNT(*), COALESCE(SUM(events), 0) FROM outbox_batches"
                " GROUP BY destination, state ORDER BY destination, state",
                (),
            )
        )
        return [
            OutboxCount(str(destination), BatchState(str(state)), int(str(batches)), int(str(events)))
            for destination, state, batches, events in rows
        ]

    def outbox_dead(self, destination: str | None = None) -> list[DeadBatch]:
        where, values = _filters(destination=destination)
        rows = self._run(
            (
                "SELECT id, destination, events, attempts, last_error FROM outbox_batches"  # noqa: S608 - fixed SQL fragments, values stay parameters
                f" WHERE state = 'dead'{where} ORDER BY updated_at",
                values,
            )
        )
        return [DeadBatch(str(i), str(d), int(str(e)), int(str(a)), str(reason or "")) for i, d, e, a, reason in rows]

    def outbox_retry(self, destination: str | None = None, batch_id: str | None = None) -> int:
        """Queue dead-lettered batches again (attempts from zero); return how many."""
        where, values = _filters(destination=destination, id=batch_id)
        rows = self._run(
            (
                "UPDATE outbox_batches SET state = 'queued', attempts = 0, next_attempt_at = ?, updated_at = ?"  # noqa: S608 - fixed SQL fragments, values stay parameters
                f" WHERE state = 'dead'{where} RETURNING id",
                (time.time(), _iso(), *values),
            )
        )
        return len(rows)

    def outbox_purge(self, *, dead: bool = False, destination: str | None = None) -> int:
        """Delete delivered batches (and, with `dead`, dead-lettered ones); return how many."""
        states = ("delivered", "dead") if dead else ("delivered", "delivered")
        where, values = _filters(destination=destination)
        rows = self._run(
            # _filters formats in column names only; values stay parameters.
            (f"DELETE FROM outbox_batches WHERE state IN (?, ?){where} RETURNING id", (*states, *values)),  # noqa: S608
        )
        return len(rows)


def status_document(outbox: Outbox) -> dict[str, list[dict[str, Any]]]:
    """The outbox's counts and dead letters as JSON-ready data (`aperio outbox status --json`, the API)."""
    return {
        "counts": [
            {"destination": c.destination, "state": c.state.value, "batches": c.batches, "events": c.events}
            for c in outbox.outbox_counts()
        ],
        "dead": [
            {"id": d.id, "destination": d.destination, "events": d.events, "attempts": d.attempts, "reason": d.reason}
            for d in outbox.outbox_dead()
        ],
    }
