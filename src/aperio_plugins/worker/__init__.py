"""Run a plugin in a worker process: `python -m aperio_plugins.worker`, supervised by the host.

    plugin = WorkerPlugin.start("acme.box", settings=host.settings, options=WorkerSettings())

The returned object stands in for the plugin object: register it like an
imported plugin. See docs/worker-protocol.md for the protocol.
"""

from ..errors import (
    HandshakeError,
    RemotePluginError,
    RemoteTraceback,
    SandboxUnavailableError,
    WorkerBoundaryError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
)
from ._lifecycle import WorkerState, WorkerStatus
from ._protocol import PROTOCOL_VERSIONS
from ._proxy import WorkerConnector, WorkerDestination, WorkerPlugin, WorkerRemediationHandler
from ._settings import WorkerSettings

__all__ = [
    "WorkerPlugin",
    "WorkerSettings",
    "WorkerStatus",
    "WorkerState",
    "WorkerConnector",
    "WorkerRemediationHandler",
    "WorkerDestination",
    "PROTOCOL_VERSIONS",
    "WorkerError",
    "WorkerTimeoutError",
    "WorkerCrashedError",
    "HandshakeError",
    "WorkerBoundaryError",
    "RemotePluginError",
    "RemoteTraceback",
    "SandboxUnavailableError",
]
