"""aperio-plugins: a plugin host that discovers, verifies, admits, loads and runs plugin wheels.

The errors load with the package; the data types, the host, its settings and its state store load
on first use (PEP 562, `_lazy_names`), so that `import aperio_plugins` costs no more than its errors
and an `aperio` command pays only for what it uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy_names import lazy_names
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
    from ._settings import HostSettings
    from ._state import SQLiteStateStore, StateStore

__version__ = "0.1.0"

_WHERE = {
    "BreakerPolicy": "_breaker",
    "BreakerState": "_breaker",
    "CatalogEntry": "_catalog",
    "CredentialProvider": "_context",
    "HostSettings": "_settings",
    "PluginHost": "_host",
    "SQLiteStateStore": "_state",
    "StateStore": "_state",
    **dict.fromkeys(
        (
            "FailureStage",
            "Isolation",
            "LoadReport",
            "Origin",
            "PluginInfo",
            "PluginKind",
            "PluginState",
            "SandboxMode",
            "SignatureStatus",
            "TrustMode",
        ),
        "_model",
    ),
}
__getattr__, __dir__ = lazy_names(__name__, globals(), _WHERE)

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
