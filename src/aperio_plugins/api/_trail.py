"""The audit trail in the state store: the host's audit events and the API's own, each with its actor.

The host logs its events (`plugin.enabled`, `plugin.reload.failed`, …) through a structlog logger;
`recording_audit_logger(trail)` is that logger with a first processor that also appends every event
to the `AuditTrail`. The actor of a host event is the principal whose API request caused it, set
with `acting_as` around the host call (a context variable, so concurrent requests do not mix).
Imports no web framework.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from .._audit import default_audit_logger
from .._fleet_name import host_name
from .._records import AuditTrail
from ..errors import AperioError

_ACTOR: ContextVar[str | None] = ContextVar("aperio_api_actor", default=None)
# Set while a host applies a decision another host (or the CLI) made and already recorded: the
# trail must show each decision once, with the host it was made on, never once per host.
_RECEIVED: ContextVar[bool] = ContextVar("aperio_fleet_received", default=False)
# Keys the trail keeps in columns of their own, and the renderer's additions.
_COLUMNS = frozenset({"event", "plugin_id", "actor", "level", "timestamp"})
_MAX_FIELDS_CHARS = 16_000  # a plugin's traceback is already cut by the host; this bounds the rest


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Attribute the audit events logged inside the block to `actor`."""
    reset = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(reset)


@contextmanager
def applying_received() -> Iterator[None]:
    """Keep the audit events logged inside the block out of the trail (they reach the log still)."""
    reset = _RECEIVED.set(True)
    try:
        yield
    finally:
        _RECEIVED.reset(reset)


class TrailRecorder:
    """A structlog processor that appends each event to an `AuditTrail` and passes it on unchanged."""

    def __init__(self, trail: AuditTrail, clock: Callable[[], datetime] = _utc_now) -> None:
        self.trail = trail
        self.clock = clock

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if _RECEIVED.get():
            return event_dict
        record(
            self.trail,
            str(event_dict.get("event", "")),
            level=method,
            plugin_id=_text(event_dict.get("plugin_id")),
            actor=_text(event_dict.get("actor")) or _ACTOR.get(),
            fields={key: value for key, value in event_dict.items() if key not in _COLUMNS},
            clock=self.clock,
        )
        return event_dict


def record(
    trail: AuditTrail,
    event: str,
    *,
    level: str = "info",
    plugin_id: str | None = None,
    actor: str | None = None,
    fields: dict[str, Any] | None = None,
    clock: Callable[[], datetime] = _utc_now,
    host: str | None = None,
) -> None:
    """Append one event to `trail`, made on `host` (default: this host's name).

    A store that fails is not allowed to undo the action it records."""
    text = json.dumps(fields or {}, default=str, sort_keys=True)
    if len(text) > _MAX_FIELDS_CHARS:
        text = json.dumps({"truncated": text[:_MAX_FIELDS_CHARS]})
    try:
        trail.record_event(
            event,
            level=level,
            occurred_at=clock(),
            plugin_id=plugin_id,
            actor=actor,
            fields=text,
            host=host or host_name(),
        )
    except AperioError:
        # The action already happened; losing its record must not turn it into a failure. The
        # stdlib audit log still has the event.
        return


def recording_audit_logger(trail: AuditTrail) -> Any:
    """Return the host's default audit logger, also recording every event into `trail`."""
    return default_audit_logger(TrailRecorder(trail))


def _text(value: object) -> str | None:
    return None if value is None else str(value)
