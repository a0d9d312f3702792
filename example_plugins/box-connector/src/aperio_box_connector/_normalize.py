"""Box admin_logs events as aperio `Event` envelopes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from aperio_hookspecs import Actor, Event, Resource

from ._client import PROVIDER


def text(mapping: Mapping[str, Any], key: str) -> str | None:
    """Return `mapping[key]` as a non-empty string, or None; Box sends some ids as numbers."""
    value = mapping.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def parse_time(value: str | None) -> datetime | None:
    """Return Box's ISO 8601 time as an aware datetime, or None when absent or malformed.

    Box writes its times with an offset (`-07:00`, or `Z`). A time without one
    is read as UTC rather than dropped: the envelopes refuse naive times, a
    skipped event is lost for good once the cursor has moved past it, and the
    zone of the machine running the plugin says nothing about Box's clock.
    The event's `raw` keeps Box's original string.
    """
    if value is None:
        return None
    # Python 3.10's fromisoformat does not read the "Z" suffix.
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def normalize_event(entry: Mapping[str, Any]) -> Event | None:
    """Return the envelope for one Box event, or None when it lacks an id, a type or a time."""
    event_id = text(entry, "event_id")
    event_type = text(entry, "event_type")
    occurred_at = parse_time(text(entry, "created_at"))
    if event_id is None or event_type is None or occurred_at is None:
        return None
    return Event(
        id=event_id,
        provider=PROVIDER,
        type=event_type,
        occurred_at=occurred_at,
        actor=actor(entry.get("created_by")),
        resource=source_resource(entry.get("source")),
        ip_address=text(entry, "ip_address"),
        raw=dict(entry),
    )


def actor(created_by: object) -> Actor | None:
    """Return who acted, from Box's mini user object."""
    if not isinstance(created_by, Mapping):
        return None
    actor_id = text(created_by, "id")
    if actor_id is None:
        return None
    return Actor(id=actor_id, name=text(created_by, "name"), login=text(created_by, "login"))


def source_resource(source: object) -> Resource | None:
    """Return what an event happened to.

    The admin_logs stream describes items as `item_type` / `item_id` /
    `item_name`; the user stream and some admin events embed the full object
    with `type` / `id` / `name`. Both are read.
    """
    if not isinstance(source, Mapping):
        return None
    kind = text(source, "type") or text(source, "item_type")
    ident = text(source, "id") or text(source, "item_id")
    name = text(source, "name") or text(source, "item_name")
    if kind is None and text(source, "group_id") is not None:
        kind, ident, name = "group", text(source, "group_id"), text(source, "group_name")
    if kind is None or ident is None:
        return None
    attributes: dict[str, Any] = {}
    parent = source.get("parent")
    if isinstance(parent, Mapping) and text(parent, "id") is not None:
        attributes["parent_id"] = text(parent, "id")
    if kind == "user" and text(source, "login") is not None:
        attributes["login"] = text(source, "login")
    return Resource(type=kind, id=ident, name=name, owner=_owner(source.get("owned_by")), attributes=attributes)


def _owner(owned_by: object) -> str | None:
    if not isinstance(owned_by, Mapping):
        return None
    return text(owned_by, "login") or text(owned_by, "id")
