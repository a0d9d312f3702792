"""aperio-plugins: a plugin host that discovers, verifies, admits, loads and runs plugin wheels."""

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

__version__ = "0.1.0"

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
