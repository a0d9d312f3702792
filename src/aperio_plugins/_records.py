"""The operator API's records in the state store: API tokens (`TokenStore`) and the audit trail
(`AuditTrail`), beside `OperatorDecisions`, `PluginKV` and `RegistryMarks`.

The SQL is portable (parameters with `?` are translated by a driver that needs `%s`; `INSERT … ON
CONFLICT` and `UPDATE … RETURNING` are understood by SQLite 3.35+ and PostgreSQL alike). The tables
are created by `_migrations`, where the audit table's generated id is spelled per database.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from .errors import StateStoreError


def audit_insert(
    event: str,
    level: str,
    occurred_at: datetime,
    plugin_id: str | None,
    actor: str | None,
    fields: str,
    host: str | None,
) -> tuple[str, tuple[object, ...]]:
    """The statement that appends one audit event, with the columns' length limits applied."""
    return (
        "INSERT INTO audit_events (occurred_at, event, level, plugin_id, actor, fields, host)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (occurred_at.isoformat(), event[:200], level[:20], plugin_id, actor, fields, host and host[:200]),
    )


class TokenRecord(msgspec.Struct, frozen=True):
    """One API token as stored: its name, the sha256 of the secret (never the secret), and its limits."""

    name: str
    token_sha256: str
    permissions: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class AuditRecord(msgspec.Struct, frozen=True):
    """One audit event as kept in the trail; `id` grows with time and pages the trail."""

    id: int
    occurred_at: datetime
    event: str
    level: str
    plugin_id: str | None
    actor: str | None
    fields: dict[str, Any]
    # The host the event happened on (`fleet.host_name()`); None for events from before the fleet.
    host: str | None = None


class TokenStore(Protocol):
    """The operator API's tokens, stored hashed (the API, `aperio token`, the console)."""

    def add_token(self, record: TokenRecord) -> None:
        """Store `record`; raise `StateStoreError` if an unrevoked token has its name (a revoked one is replaced)."""
        ...

    def token_by_digest(self, token_sha256: str) -> TokenRecord | None: ...
    def tokens(self) -> list[TokenRecord]: ...
    def revoke_token(self, name: str, at: datetime) -> bool:
        """Mark the token `name` revoked; return False if there is no unrevoked token of that name."""
        ...


class AuditTrail(Protocol):
    """Audit events kept in the state store, newest first when read back."""

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
        """Append one event; `fields` is its JSON object text, `host` the host it happened on."""
        ...

    def audit_events(
        self,
        *,
        plugin_id: str | None = None,
        event: str | None = None,
        actor: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Return up to `limit` events matching every given filter, newest first, with ids below `before`."""
        ...


class ApiRecords(TokenStore, AuditTrail, Protocol):
    """A store of both (every state store backend is one): what `aperio serve` keeps for its API."""


def _time(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _required_time(value: object) -> datetime:
    parsed = _time(value)
    assert parsed is not None  # only for the schema's NOT NULL columns
    return parsed


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class SQLRecords:
    """`TokenStore` and `AuditTrail` over the state store's `_run` (one transaction per call)."""

    def _run(self, *statements: tuple[str, tuple[object, ...]]) -> list[tuple[object, ...]]:
        raise NotImplementedError  # provided by the store this is mixed into

    def add_token(self, record: TokenRecord) -> None:
        # One transaction, and the insert itself decides: two hosts adding the same name at once
        # cannot both pass a separate check (PostgreSQL's READ COMMITTED would let them).
        inserted = self._run(
            # A revoked token's name can be reused.
            ("DELETE FROM api_tokens WHERE name = ? AND revoked_at IS NOT NULL", (record.name,)),
            (
                "INSERT INTO api_tokens (name, token_sha256, permissions, created_at, expires_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING name",
                _token_row(record),
            ),
        )
        if not inserted:
            raise StateStoreError(f"a token named {record.name!r} already exists; revoke it first")

    def token_by_digest(self, token_sha256: str) -> TokenRecord | None:
        rows = self._run((f"{_TOKEN_COLUMNS} WHERE token_sha256 = ?", (token_sha256,)))
        return _token(rows[0]) if rows else None

    def tokens(self) -> list[TokenRecord]:
        return [_token(row) for row in self._run((f"{_TOKEN_COLUMNS} ORDER BY name", ()))]

    def revoke_token(self, name: str, at: datetime) -> bool:
        # UPDATE … RETURNING: SQLite 3.35+ and PostgreSQL both have it; it says whether a row changed.
        rows = self._run(
            (
                "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL RETURNING name",
                (at.isoformat(), name),
            )
        )
        return bool(rows)

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
        self._run(audit_insert(event, level, occurred_at, plugin_id, actor, fields, host))

    def audit_events(
        self,
        *,
        plugin_id: str | None = None,
        event: str | None = None,
        actor: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        conditions: list[str] = []
        parameters: list[object] = []
        for column, value in (("plugin_id", plugin_id), ("event", event), ("actor", actor)):
            if value is not None:
                conditions.append(f"{column} = ?")
                parameters.append(value)
        if before is not None:
            conditions.append("id < ?")
            parameters.append(before)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._run(
            (
                # The WHERE clause is built from fixed column names only; every value is a parameter.
                "SELECT id, occurred_at, event, level, plugin_id, actor, fields, host FROM audit_events"  # noqa: S608
                f"{where} ORDER BY id DESC LIMIT ?",
                (*parameters, max(1, limit)),
            )
        )
        return [_audit(row) for row in rows]


# A record's conversions to and from its row, one pair per record type, for every backend; the rows'
# columns are in the order of `_TOKEN_COLUMNS` and of the audit SELECT above.
_TOKEN_COLUMNS = "SELECT name, token_sha256, permissions, created_at, expires_at, revoked_at FROM api_tokens"  # noqa: S105 - column names, not a secret


def _token_row(record: TokenRecord) -> tuple[object, ...]:
    return (
        record.name,
        record.token_sha256,
        " ".join(record.permissions),
        record.created_at.isoformat(),
        _iso(record.expires_at),
        _iso(record.revoked_at),
    )


def _token(row: Sequence[object]) -> TokenRecord:
    name, digest, permissions, created_at, expires_at, revoked_at = row
    return TokenRecord(
        str(name),
        str(digest),
        tuple(str(permissions).split()),
        _required_time(created_at),
        _time(expires_at),
        _time(revoked_at),
    )


def _audit(row: Sequence[object]) -> AuditRecord:
    identifier, occurred_at, event, level, plugin_id, actor, fields, host = row
    try:
        decoded = json.loads(str(fields))
    except ValueError:
        decoded = {"unreadable": str(fields)}
    return AuditRecord(
        id=int(str(identifier)),
        occurred_at=_required_time(occurred_at),
        event=str(event),
        level=str(level),
        plugin_id=_text(plugin_id),
        actor=_text(actor),
        fields=decoded if isinstance(decoded, dict) else {"value": decoded},
        host=_text(host),
    )
