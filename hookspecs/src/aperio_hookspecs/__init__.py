"""The aperio plugin API (SDK): markers, hookspecs, envelopes and the invocation context.

The pydantic models (envelopes, the invocation context) and the extension classes built on them are
imported on first use of one of their names (PEP 562): a host that only lists plugins needs the
markers, the hookspecs and `API_VERSION`, and building every model cost about a third of
`aperio plugin list`'s start-up (docs/performance.md, issue 11). `from aperio_hookspecs import Finding`
works as before; type checkers read the `TYPE_CHECKING` block.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    CredentialNotGrantedError,
    DeadlineExceededError,
    PluginAPIError,
    PluginConfigurationError,
    ProviderError,
)
from ._markers import PROJECT_NAME, PROPAGATE_ATTRIBUTE, hookimpl, hookspec, propagate_errors
from ._version import __version__

if TYPE_CHECKING:
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
    from ._extensions import Connector, Destination, RemediationHandler

API_VERSION = __version__
DISTRIBUTION_NAME = "aperio-hookspecs"
ENTRY_POINT_GROUP = "aperio.plugins"

# Each lazily imported name and the private module that defines it (must match the TYPE_CHECKING block).
_LAZY: dict[str, str] = {
    **dict.fromkeys(("Credential", "Credentials", "InvocationContext", "KeyValueStore", "PluginLogger"), "_context"),
    **dict.fromkeys(
        (
            "ENVELOPE_MODELS",
            "ENVELOPE_VERSION",
            "ActionDefinition",
            "Actor",
            "DeliveryBatch",
            "DeliveryReceipt",
            "Event",
            "Finding",
            "Payload",
            "RejectedEnvelope",
            "RemediationRequest",
            "RemediationResult",
            "RemediationStatus",
            "Resource",
            "Severity",
            "SyncRequest",
            "SyncResult",
        ),
        "_envelopes",
    ),
    **dict.fromkeys(("Connector", "Destination", "RemediationHandler"), "_extensions"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    # Cached in the module's namespace so that later lookups never come back here.
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
