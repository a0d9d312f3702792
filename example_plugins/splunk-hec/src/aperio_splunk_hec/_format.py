"""Envelopes as HEC event objects, and the objects packed into requests under a byte limit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aperio_hookspecs import Event, Finding

from ._config import HecConfig


@dataclass(frozen=True)
class Encoded:
    """One envelope as the bytes of one HEC event object."""

    envelope_id: str
    data: bytes


IDEMPOTENCY_FIELD = "aperio_idempotency_key"


def hec_event(
    envelope: Event | Finding, config: HecConfig, host: str, idempotency_key: str | None = None
) -> dict[str, Any]:
    """Return the HEC event object for one envelope; the envelope itself is the `event`.

    With the batch's idempotency key, the event carries it as an indexed field: a search (or a
    receiver) can count `(aperio_idempotency_key, event.id)` once however often it was redelivered.
    """
    when = envelope.occurred_at if isinstance(envelope, Event) else envelope.detected_at
    event: dict[str, Any] = {
        "time": epoch(when),
        "host": host,
        "source": config.source,
        "sourcetype": config.sourcetype or f"aperio:{envelope.kind}",
        "event": envelope.model_dump(mode="json"),
    }
    if config.index is not None:
        event["index"] = config.index
    if idempotency_key is not None:
        event["fields"] = {IDEMPOTENCY_FIELD: idempotency_key}
    return event


def epoch(when: datetime) -> float:
    """Return seconds since the epoch with millisecond precision, HEC's `time`.

    The envelopes refuse naive times, so `timestamp()` never falls back to
    this machine's local zone.
    """
    return round(when.timestamp(), 3)


def encode(envelope: Event | Finding, config: HecConfig, host: str, idempotency_key: str | None = None) -> Encoded:
    # One object per line: HEC reads concatenated objects, and a newline keeps
    # a captured request readable at no cost.
    text = json.dumps(
        hec_event(envelope, config, host, idempotency_key), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return Encoded(envelope.id, (text + "\n").encode("utf-8"))


def pack(encoded: list[Encoded], max_bytes: int) -> list[list[Encoded]]:
    """Return the events in order, in as few consecutive chunks of at most `max_bytes` as greedy packing gives.

    Every event must already fit on its own.
    """
    chunks: list[list[Encoded]] = []
    current: list[Encoded] = []
    size = 0
    for item in encoded:
        if current and size + len(item.data) > max_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += len(item.data)
    if current:
        chunks.append(current)
    return chunks
