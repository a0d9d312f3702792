"""Deliveries that lose nothing: batches go into the outbox first, and a dispatcher delivers them.

`enqueue` validates a batch and writes it to the store's outbox before it returns (the host's
`deliver`, the API, the CLI). A `Dispatcher` claims due batches under a lease and calls the
destination plugin through the host's `run`, so the plugin's circuit breaker, deadline and worker
isolation apply. What the receipt says decides the batch's fate:

- everything accepted: delivered;
- refused as not retryable: dead-lettered with the receiver's reason (kept, never dropped);
- failed, busy, or left out of the receipt: retried after an exponential backoff with jitter, until
  `max_attempts`, then dead-lettered with the last reason;
- the breaker open: put back until the breaker's next probe, without spending an attempt.

Delivery is at least once: a host killed after the receiver took a batch and before it recorded
that redelivers it, with the same idempotency key, which a receiver can deduplicate on.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import pydantic
import pydantic_core

from aperio_hookspecs import DeliveryBatch, DeliveryReceipt, Event, Finding

from ._catalog import CatalogEntry
from ._outbox import ClaimedBatch, Outbox, SQLOutbox
from .errors import AperioError, CircuitOpenError, ConfigurationError, DeliveryError, StateStoreError

_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())


class DispatchPolicy(msgspec.Struct, frozen=True):
    """How the dispatcher retries: attempts before the dead letters, backoff bounds, lease, batch size."""

    max_attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 300.0
    lease: float = 60.0
    claim_limit: int = 10
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.claim_limit < 1:
            raise ConfigurationError("the outbox needs max_attempts and claim_limit of at least 1")
        if not 0 < self.base_delay <= self.max_delay or self.lease <= 0 or self.poll_interval <= 0:
            raise ConfigurationError("the outbox needs 0 < base_delay <= max_delay, a positive lease and poll interval")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> DispatchPolicy:
        """Read `APERIO_OUTBOX_MAX_ATTEMPTS`, `_BASE_DELAY`, `_MAX_DELAY`, `_LEASE`; raise `ConfigurationError`."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, kind in (("max_attempts", int), ("base_delay", float), ("max_delay", float), ("lease", float)):
            variable = f"APERIO_OUTBOX_{name.upper()}"
            if variable in env:
                try:
                    values[name] = kind(env[variable])
                except ValueError:
                    raise ConfigurationError(f"{variable} must be a number, not {env[variable]!r}") from None
        return cls(**values)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Seconds before attempt `attempt + 1`: doubling from `base_delay`, capped, the upper half jittered."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(attempt - 1, 62))
        # Jitter spreads the retries of many batches that failed together (a receiver's outage).
        return rng.uniform(ceiling / 2, ceiling)


class DeliveryTarget(Protocol):
    """What the dispatcher needs of the host: the catalog's destinations and a guarded call."""

    @property
    def destinations(self) -> Mapping[str, CatalogEntry]: ...
    def run(self, plugin_id: str, payload: Any, *, timeout: float | None = None) -> pydantic.BaseModel: ...


def outbox_of(store: object) -> Outbox:
    """Return `store` as an `Outbox`; raise `StateStoreError` for a store without one (a test's stand-in)."""
    if not isinstance(store, SQLOutbox):
        raise StateStoreError(
            f"the state store {type(store).__name__} keeps no outbox: deliveries need SQLite or PostgreSQL"
        )
    return store


def enqueue(
    outbox: Outbox,
    destinations: Mapping[str, CatalogEntry],
    destination: str,
    events: Iterable[Event | Finding | Mapping[str, Any]],
    config: Mapping[str, Any] | None = None,
) -> str:
    """Validate a batch and write it to the outbox (committed on return); return its idempotency key.

    Raises `DeliveryError` for an unknown destination or malformed envelopes (nothing is queued),
    `StateStoreError` when the store cannot take it.
    """
    if destination not in destinations:
        known = ", ".join(sorted(destinations)) or "none"
        raise DeliveryError(f"no destination named {destination!r} is registered on this host (known: {known})")
    # Envelope models pass as they are (validated when made); anything else is validated here.
    items = [event if isinstance(event, (Event, Finding)) else dict(event) for event in events]
    try:
        batch = DeliveryBatch(destination=destination, envelopes=items, config=dict(config or {}))
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise DeliveryError(f"batch for {destination!r} not queued, malformed: {problems}") from None
    if not batch.envelopes:
        raise DeliveryError(f"batch for {destination!r} not queued: it has no envelopes")
    # Dumped once and encoded by pydantic-core: half the cost of dumping each envelope to JSON-ready
    # dicts and encoding them with `json`. The models' own JSON encoder would write NaN as null;
    # dumped to Python first, a non-finite float stays one, is written as a literal, and is refused.
    payload = pydantic_core.to_json(
        batch.model_dump(include={"envelopes", "config"}), inf_nan_mode="constants"
    ).decode()
    if ("NaN" in payload or "Infinity" in payload) and not _strict_json(payload):
        raise DeliveryError(f"batch for {destination!r} not queued: NaN and Infinity are not JSON numbers")
    return outbox.outbox_enqueue_json(destination, payload, len(batch.envelopes))


def _strict_json(text: str) -> bool:
    try:
        pydantic_core.from_json(text, allow_inf_nan=False)
    except ValueError:
        return False
    return True


@dataclass
class DispatchCounters:
    """What one dispatcher did since it started (the `/metrics` counters)."""

    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    failed_rounds: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


class Dispatcher:
    """Delivers the outbox's due batches through the host; one per host, shared outbox or not."""

    def __init__(
        self,
        target: DeliveryTarget,
        outbox: Outbox,
        policy: DispatchPolicy | None = None,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._target = target
        self._outbox = outbox
        self.policy = policy or DispatchPolicy()
        # Host name, pid and a random part: unique across a fleet and across restarts of one pid.
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not a secret
        self.counters = DispatchCounters()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Claim due batches once and deliver each; return how many were claimed.

        Raises `StateStoreError` when the store cannot be reached (nothing claimed is lost: its
        lease expires and it is claimed again).
        """
        batches = self._outbox.outbox_claim(self.owner, self.policy.lease, self.policy.claim_limit)
        delivered: list[str] = []
        try:
            for batch in batches:
                if self._deliver(batch):
                    delivered.append(batch.id)
        finally:
            # One commit marks the whole round delivered, not one per batch: commits are most of the
            # outbox's cost on SQLite. A host killed before this line redelivers the round's
            # delivered batches (at least once, each with its own key), not only the one in flight.
            # Marked here also when a later batch of the round raised, so they are not sent again.
            for _ in self._outbox.outbox_complete_many(delivered, self.owner):
                self.counters.add("delivered")
        return len(batches)

    def drain(self, max_rounds: int = 1000) -> int:
        """Run rounds until none claims anything (or `max_rounds`); return how many batches were claimed."""
        total = 0
        for _ in range(max_rounds):
            claimed = self.run_once()
            if claimed == 0:
                break
            total += claimed
        return total

    def _deliver(self, batch: ClaimedBatch) -> bool:
        """Deliver one batch and record a retry or a dead letter; True when all of it was accepted
        (the caller marks it delivered)."""
        entry = self._target.destinations.get(batch.destination)
        if entry is None:
            self._failed(batch, list(batch.envelopes), f"destination {batch.destination!r} is not registered")
            return False
        payload = DeliveryBatch.model_validate_json(batch.delivery_json())
        try:
            result = self._target.run(entry.plugin_id, payload)
        except CircuitOpenError as exc:
            wait = max(exc.retry_in, self.policy.base_delay)
            self._outbox.outbox_reschedule(batch.id, self.owner, list(batch.envelopes), wait, str(exc), counted=False)
            self.counters.add("retried")
            return False
        except AperioError as exc:
            self._failed(batch, list(batch.envelopes), str(exc))
            return False
        if not isinstance(result, DeliveryReceipt):  # run() validated it against the operation's model
            self._failed(batch, list(batch.envelopes), f"destination returned {type(result).__name__}, not a receipt")
            return False
        return self._settle(batch, payload, result)

    def _settle(self, batch: ClaimedBatch, payload: DeliveryBatch, receipt: DeliveryReceipt) -> bool:
        accepted = set(receipt.accepted)
        if all(envelope.id in accepted for envelope in payload.envelopes):
            return True  # the common case, decided without parsing the stored envelopes
        refused = {r.id: r.reason for r in receipt.rejected if not r.retryable and r.id not in accepted}
        busy = {r.id: r.reason for r in receipt.rejected if r.retryable and r.id not in accepted}
        dead = [e for e in batch.envelopes if e.get("id") in refused]
        # An envelope the receipt does not mention was not confirmed: deliver it again.
        again = [e for e in batch.envelopes if e.get("id") not in accepted and e.get("id") not in refused]
        if dead and again:
            # Split: the refused part stays in the dead letters under its own row, the rest retries.
            reason = _reasons(refused)
            self._outbox.outbox_dead_split(batch.id, batch.destination, dead, batch.config, reason)
            self.counters.add("dead_lettered")
        elif dead:
            self._outbox.outbox_dead_letter(batch.id, self.owner, dead, _reasons(refused))
            self.counters.add("dead_lettered")
            return False
        if again:
            missing = {str(e.get("id")): "not in the destination's receipt" for e in again if e.get("id") not in busy}
            self._failed(batch, again, _reasons({**busy, **missing}))
            return False
        return True

    def _failed(self, batch: ClaimedBatch, envelopes: list[dict[str, Any]], reason: str) -> None:
        if batch.attempts >= self.policy.max_attempts:
            why = f"gave up after {batch.attempts} attempts: {reason}"
            self._outbox.outbox_dead_letter(batch.id, self.owner, envelopes, why)
            self.counters.add("dead_lettered")
            return
        delay = self.policy.backoff(batch.attempts, self._rng)
        self._outbox.outbox_reschedule(batch.id, self.owner, envelopes, delay, reason, counted=True)
        self.counters.add("retried")

    # -- the background loop (`aperio serve`) -----------------------------------------

    def start(self) -> None:
        """Run rounds in a daemon thread until `stop()`; a failing round is logged, never fatal."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="aperio-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.run_once()
            except Exception:  # noqa: BLE001 - the server outlives a store outage; the next round retries
                self.counters.add("failed_rounds")
                _log.warning("outbox round failed", exc_info=True)
                claimed = 0
            if claimed == 0:
                self._stop.wait(self.policy.poll_interval)


def _reasons(reasons: Mapping[str, str]) -> str:
    distinct = sorted(set(reasons.values()))
    text = "; ".join(distinct[:3]) + (f"; and {len(distinct) - 3} more" if len(distinct) > 3 else "")
    return f"{len(reasons)} envelope(s): {text}"
