"""An in-memory invocation context for plugin authors' tests.

    from aperio_hookspecs.testing import make_context

    context = make_context("acme.box-connector", credentials={"box:read": "token"})
    result = BoxConnector().sync(context, SyncRequest(connector="box"))
    assert context.logger.records[0].event == "box.sync.started"

It behaves like the host's context where a plugin can tell: credentials outside
the declared scopes are refused, and the deadline is real.

The envelope factories (`make_event`, `make_finding`, `make_sync_request`,
`make_remediation_request`, `make_delivery_batch`) fill every required field
with a plausible value, so that a test states only what it is about:

    batch = make_delivery_batch("acme-siem", [make_event(type="user.login")])

Installed with the SDK, a pytest plugin (`aperio_hookspecs.pytest_plugin`)
offers these as fixtures: `aperio_context`, `aperio_kv`, `aperio_logs`,
`make_aperio_context` and `aperio_envelopes`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import JsonValue, SecretStr

from ._context import Credential
from ._envelopes import (
    DeliveryBatch,
    Event,
    Finding,
    RemediationRequest,
    Resource,
    Severity,
    SyncRequest,
)
from ._errors import CredentialNotGrantedError, DeadlineExceededError


@dataclass(frozen=True)
class LogRecord:
    level: str
    event: str
    fields: dict[str, Any]


@dataclass
class RecordingLogger:
    """A logger that keeps what it was told, for assertions."""

    bound: dict[str, Any] = field(default_factory=dict)
    records: list[LogRecord] = field(default_factory=list)

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.records.append(LogRecord(level, event, {**self.bound, **fields}))

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def bind(self, **fields: Any) -> RecordingLogger:
        # Bound loggers share one record list, as structlog's share one output.
        return RecordingLogger({**self.bound, **fields}, self.records)


@dataclass
class MemoryKeyValueStore:
    data: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(key for key in self.data if key.startswith(prefix))


@dataclass(frozen=True)
class StaticCredentials:
    """Hands out fixed secrets, only for the scopes it was given."""

    plugin_id: str
    secrets: Mapping[str, str]

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.secrets)

    def get(self, scope: str) -> Credential:
        if scope not in self.secrets:
            raise CredentialNotGrantedError(self.plugin_id, scope, "not among the scopes granted to this context")
        return Credential(scope=scope, secret=SecretStr(self.secrets[scope]))


@dataclass
class MemoryContext:
    """An `InvocationContext` held entirely in memory."""

    plugin_id: str
    invocation_id: str
    logger: RecordingLogger
    deadline: float
    kv: MemoryKeyValueStore
    credentials: StaticCredentials

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise DeadlineExceededError(
                f"plugin {self.plugin_id!r}: invocation {self.invocation_id} ran past its deadline"
            )


def make_context(
    plugin_id: str,
    *,
    credentials: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    kv: MemoryKeyValueStore | None = None,
) -> MemoryContext:
    """Return a fresh in-memory context with `timeout` seconds until its deadline."""
    return MemoryContext(
        plugin_id=plugin_id,
        invocation_id=uuid.uuid4().hex,
        logger=RecordingLogger({"plugin_id": plugin_id}),
        deadline=time.monotonic() + timeout,
        kv=kv if kv is not None else MemoryKeyValueStore(),
        credentials=StaticCredentials(plugin_id, dict(credentials or {})),
    )


# A fixed instant: tests that compare envelopes should not depend on the clock.
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_resource(**fields: Any) -> Resource:
    """Return a `Resource` (type `file`, id `resource-1` unless given)."""
    return Resource.model_validate({"type": "file", "id": "resource-1", **fields})


def make_event(**fields: Any) -> Event:
    """Return an `Event` with every required field filled; `fields` override them."""
    defaults: dict[str, Any] = {
        "id": f"event-{uuid.uuid4().hex[:12]}",
        "provider": "example",
        "type": "example.event",
        "occurred_at": EPOCH,
    }
    return Event.model_validate({**defaults, **fields})


def make_finding(**fields: Any) -> Finding:
    """Return a `Finding` (severity medium, on `make_resource()`) with `fields` overriding the defaults."""
    defaults: dict[str, Any] = {
        "id": f"finding-{uuid.uuid4().hex[:12]}",
        "provider": "example",
        "title": "Example finding",
        "severity": Severity.MEDIUM,
        "resource": make_resource(),
        "detected_at": EPOCH,
    }
    return Finding.model_validate({**defaults, **fields})


def make_sync_request(connector: str, **fields: Any) -> SyncRequest:
    """Return a `SyncRequest` for `connector`."""
    return SyncRequest.model_validate({"connector": connector, **fields})


def make_remediation_request(action: str, **fields: Any) -> RemediationRequest:
    """Return a `RemediationRequest` for `action` on `make_resource()` unless a resource is given."""
    defaults: dict[str, Any] = {"id": f"request-{uuid.uuid4().hex[:12]}", "resource": make_resource()}
    return RemediationRequest.model_validate({**defaults, "action": action, **fields})


def make_delivery_batch(
    destination: str, envelopes: list[Event | Finding] | None = None, config: dict[str, JsonValue] | None = None
) -> DeliveryBatch:
    """Return a `DeliveryBatch` for `destination` (one `make_event()` unless `envelopes` are given)."""
    return DeliveryBatch(
        destination=destination,
        envelopes=tuple(envelopes if envelopes is not None else [make_event()]),
        config=dict(config or {}),
    )
