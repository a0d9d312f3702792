"""The three extension points: what a plugin registers through the registration hooks."""

from __future__ import annotations

import abc
from typing import ClassVar

from ._context import InvocationContext
from ._envelopes import (
    ActionDefinition,
    DeliveryBatch,
    DeliveryReceipt,
    RemediationRequest,
    RemediationResult,
    SyncRequest,
    SyncResult,
)


class Connector(abc.ABC):
    """Authenticates to a provider, syncs its state and events, and normalizes
    them into envelopes. `name` is unique among the host's connectors."""

    name: ClassVar[str]
    provider: ClassVar[str]
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def sync(self, context: InvocationContext, request: SyncRequest) -> SyncResult:
        """Fetch what changed since `request.cursor`; return it with the next cursor."""


class RemediationHandler(abc.ABC):
    """Performs one provider-side write action described by `action`."""

    action: ClassVar[ActionDefinition]

    @abc.abstractmethod
    def remediate(self, context: InvocationContext, request: RemediationRequest) -> RemediationResult:
        """Perform (or, with `request.dry_run`, describe) the action on one resource."""


class Destination(abc.ABC):
    """An outbound transport to a SIEM or workflow system."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def deliver(self, context: InvocationContext, batch: DeliveryBatch) -> DeliveryReceipt:
        """Deliver the batch; report which envelopes were accepted and which refused."""
