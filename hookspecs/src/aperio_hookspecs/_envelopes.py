"""Versioned envelope models: what crosses the boundary between host and plugin.

Every envelope is a frozen pydantic model with a `kind` and an
`envelope_version`, so that a stored or transported envelope says what it is.
Unknown fields are refused: a typo in a plugin's output is that plugin's bug,
and it is reported at the boundary rather than silently dropped.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

ENVELOPE_VERSION: Literal[1] = 1

NonEmpty = Annotated[str, Field(min_length=1)]


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Severity(str, enum.Enum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Actor(_Envelope):
    """Who did something at the provider."""

    id: NonEmpty
    name: str | None = None
    login: str | None = None


class Resource(_Envelope):
    """What something happened to, in the provider's own terms."""

    type: NonEmpty
    id: NonEmpty
    name: str | None = None
    owner: str | None = None
    attributes: dict[str, JsonValue] = Field(default_factory=dict)


class Event(_Envelope):
    """One normalized provider event (an audit log entry, a sign-in, a share)."""

    kind: Literal["event"] = "event"
    envelope_version: Literal[1] = ENVELOPE_VERSION
    id: NonEmpty
    provider: NonEmpty
    type: NonEmpty
    occurred_at: AwareDatetime
    actor: Actor | None = None
    resource: Resource | None = None
    ip_address: str | None = None
    raw: dict[str, JsonValue] = Field(default_factory=dict)


class Finding(_Envelope):
    """A security-relevant condition a connector found, optionally with the
    remediation action that would fix it."""

    kind: Literal["finding"] = "finding"
    envelope_version: Literal[1] = ENVELOPE_VERSION
    id: NonEmpty
    provider: NonEmpty
    title: NonEmpty
    severity: Severity
    resource: Resource
    description: str = ""
    detected_at: AwareDatetime
    remediation_action: str | None = None
    evidence: dict[str, JsonValue] = Field(default_factory=dict)


class SyncRequest(_Envelope):
    """Asks one connector to fetch what changed since `cursor`."""

    kind: Literal["sync_request"] = "sync_request"
    envelope_version: Literal[1] = ENVELOPE_VERSION
    connector: NonEmpty
    cursor: str | None = None
    config: dict[str, JsonValue] = Field(default_factory=dict)
    max_items: int = Field(default=10_000, gt=0)


class SyncResult(_Envelope):
    """What a sync produced, and where the next sync starts."""

    kind: Literal["sync_result"] = "sync_result"
    envelope_version: Literal[1] = ENVELOPE_VERSION
    connector: NonEmpty
    events: tuple[Event, ...] = ()
    findings: tuple[Finding, ...] = ()
    next_cursor: str | None = None
    has_more: bool = False
    """True when the connector stopped early (max_items, deadline) and another sync would find more."""


class ActionDefinition(_Envelope):
    """A remediation action as it appears in the host's action catalog."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
    provider: NonEmpty
    title: NonEmpty
    description: str = ""
    resource_types: tuple[NonEmpty, ...] = ()
    destructive: bool = False
    supports_dry_run: bool = True


class RemediationRequest(_Envelope):
    """Asks a remediation handler to perform one action on one resource."""

    kind: Literal["remediation_request"] = "remediation_request"
    envelope_version: Literal[1] = ENVELOPE_VERSION
    id: NonEmpty
    action: NonEmpty
    resource: Resource
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    config: dict[str, JsonValue] = Field(default_factory=dict)
    """Connection settings for the handler (base URL, retries), kept apart from the action's parameters."""
    dry_run: bool = False


class RemediationStatus(str, enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_NEEDED = "not_needed"
    DRY_RUN = "dry_run"


class RemediationResult(_Envelope):
    """The outcome of one remediation request."""

    kind: Literal["remediation_result"] = "remediation_result"
    envelope_version: Literal[1] = ENVELOPE_VERSION
    request_id: NonEmpty
    action: NonEmpty
    status: RemediationStatus
    detail: str = ""
    changes: dict[str, JsonValue] = Field(default_factory=dict)


DeliverableEnvelope = Annotated[Event | Finding, Field(discriminator="kind")]


class DeliveryBatch(_Envelope):
    """Envelopes to hand to one destination."""

    kind: Literal["delivery_batch"] = "delivery_batch"
    envelope_version: Literal[1] = ENVELOPE_VERSION
    destination: NonEmpty
    envelopes: tuple[DeliverableEnvelope, ...]
    config: dict[str, JsonValue] = Field(default_factory=dict)
    idempotency_key: str | None = None
    """The same on every redelivery of this batch (API 1.2): a receiver that can deduplicate keeps
    `(idempotency_key, envelope id)` and counts a repeat once. None for a direct, unqueued call."""


class RejectedEnvelope(_Envelope):
    id: NonEmpty
    reason: NonEmpty
    retryable: bool = False
    """True when the destination was busy or unreachable, false when the envelope itself was refused."""


class DeliveryReceipt(_Envelope):
    """What a destination accepted and what it refused, envelope by envelope."""

    kind: Literal["delivery_receipt"] = "delivery_receipt"
    envelope_version: Literal[1] = ENVELOPE_VERSION
    destination: NonEmpty
    accepted: tuple[NonEmpty, ...] = ()
    rejected: tuple[RejectedEnvelope, ...] = ()


Payload = SyncRequest | RemediationRequest | DeliveryBatch

ENVELOPE_MODELS: tuple[type[BaseModel], ...] = (
    Event,
    Finding,
    SyncRequest,
    SyncResult,
    ActionDefinition,
    RemediationRequest,
    RemediationResult,
    DeliveryBatch,
    DeliveryReceipt,
)
