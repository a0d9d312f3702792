"""The worker subsystem's errors, defined with the rest of the tree in `aperio_plugins.errors`."""

from ..errors import (
    HandshakeError,
    RemotePluginError,
    RemoteTraceback,
    WorkerBoundaryError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
)

__all__ = [
    "HandshakeError",
    "RemotePluginError",
    "RemoteTraceback",
    "WorkerBoundaryError",
    "WorkerCrashedError",
    "WorkerError",
    "WorkerTimeoutError",
]
