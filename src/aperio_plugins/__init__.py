"""aperio-plugins: a plugin host that discovers, verifies, admits, loads and runs plugin wheels.

The data types and errors load with the package; the host, its settings and its state store
load on first use (PEP 562), so that `import aperio_plugins` and an `aperio` command that
needs none of them do not pay for pydantic-settings, the worker machinery or sigstore.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._model import (
    FailureStage,
    Isolation,
    LoadReport,
    Origin,
    PluginInfo,
    PluginKind,
    PluginState,
    SandboxMode,
    SignatureStatus,
    TrustMode,
)
from .errors import (
    AperioError,
    AperioWarning,
    CircuitOpenError,
    ConfigurationError,
    HookError,
    InvalidWheelError,
    LifecycleError,
    ManifestError,
    PluginCallError,
    PluginLoadError,
    SigningError,
    StateStoreError,
    TamperedFileError,
    UnknownPluginError,
    VerificationError,
)

if TYPE_CHECKING:
    from ._breaker import BreakerPolicy, BreakerState
    from ._catalog import CatalogEntry
    from ._context import CredentialProvider
    from ._host import PluginHost
    from ._settings import HostSettings
    from ._state import SQLiteStateStore, StateStore

__version__ = "0.1.0"

_LAZY = {
    "BreakerPolicy": "._breaker",
    "BreakerState": "._breaker",
    "CatalogEntry": "._catalog",
    "CredentialProvider": "._context",
    "HostSettings": "._settings",
    "PluginHost": "._host",
    "SQLiteStateStore": "._state",
    "StateStore": "._state",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup does not come back here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "PluginHost",
    "HostSettings",
    "LoadReport",
    "PluginInfo",
    "CatalogEntry",
    "BreakerPolicy",
    "BreakerState",
    "CredentialProvider",
    "StateStore",
    "SQLiteStateStore",
    "FailureStage",
    "Isolation",
    "Origin",
    "PluginKind",
    "PluginState",
    "SandboxMode",
    "SignatureStatus",
    "TrustMode",
    "AperioError",
    "CircuitOpenError",
    "AperioWarning",
    "ConfigurationError",
    "HookError",
    "LifecycleError",
    "ManifestError",
    "PluginCallError",
    "PluginLoadError",
    "StateStoreError",
    "SigningError",
    "TamperedFileError",
    "InvalidWheelError",
    "UnknownPluginError",
    "VerificationError",
    "__version__",
]
