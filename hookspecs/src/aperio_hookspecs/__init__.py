"""The aperio plugin API (SDK): markers, hookspecs, envelopes and the invocation context."""

from ._context import Credential, Credentials, InvocationContext, KeyValueStore, PluginLogger
from ._envelopes import (
    ENVELOPE_MODELS,
    ENVELOPE_VERSION,
    ActionDefinition,
    Actor,
    DeliveryBatch,
    DeliveryReceipt,
    Event,
    Finding,
    Payload,
    RejectedEnvelope,
    RemediationRequest,
    RemediationResult,
    RemediationStatus,
    Resource,
    Severity,
    SyncRequest,
    SyncResult,
)
from ._errors import (
    CredentialNotGrantedError,
    DeadlineExceededError,
    PluginAPIError,
    PluginConfigurationError,
    ProviderError,
)
from ._extensions import Connector, Destination, RemediationHandler
from ._markers import PROJECT_NAME, PROPAGATE_ATTRIBUTE, hookimpl, hookspec, propagate_errors
from ._version import __version__

API_VERSION = __version__
DISTRIBUTION_NAME = "aperio-hookspecs"
ENTRY_POINT_GROUP = "aperio.plugins"

__all__ = [
    "API_VERSION",
    "DISTRIBUTION_NAME",
    "ENTRY_POINT_GROUP",
    "ENVELOPE_MODELS",
    "ENVELOPE_VERSION",
    "PROJECT_NAME",
    "PROPAGATE_ATTRIBUTE",
    "ActionDefinition",
    "Actor",
    "Connector",
    "Credential",
    "CredentialNotGrantedError",
    "Credentials",
    "DeadlineExceededError",
    "DeliveryBatch",
    "DeliveryReceipt",
    "Destination",
    "Event",
    "Finding",
    "InvocationContext",
    "KeyValueStore",
    "Payload",
    "PluginAPIError",
    "PluginConfigurationError",
    "PluginLogger",
    "ProviderError",
    "RejectedEnvelope",
    "RemediationHandler",
    "RemediationRequest",
    "RemediationResult",
    "RemediationStatus",
    "Resource",
    "Severity",
    "SyncRequest",
    "SyncResult",
    "__version__",
    "hookimpl",
    "hookspec",
    "propagate_errors",
]
