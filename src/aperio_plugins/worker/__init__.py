"""Run a plugin in a worker process: `python -m aperio_plugins.worker`, supervised by the host.

    plugin = WorkerPlugin.start("acme.box", settings=host.settings, options=WorkerSettings())

The returned object stands in for the plugin object: register it like an
imported plugin. See docs/worker-protocol.md for the protocol.

The folder follows the process boundary: `supervise/` is the host's side (start, talk to,
restart and stop a worker), `serve/` the worker's side (what runs inside the worker
process), and the protocol, codec, settings and process-tree helpers here are shared by
both. Each name below loads its module on first use (PEP 562), so the worker process,
which imports this package first, loads nothing of the host's side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy_names import lazy_names
from ..errors import (
    HandshakeError,
    PluginCallError,
    RemotePluginError,
    RemoteTraceback,
    SandboxUnavailableError,
    WorkerBoundaryError,
    WorkerCrashedError,
    WorkerError,
    WorkerTimeoutError,
)

if TYPE_CHECKING:
    from ._protocol import PROTOCOL_VERSIONS
    from ._settings import WorkerSettings
    from .supervise._lifecycle import WorkerState, WorkerStatus
    from .supervise._proxy import WorkerConnector, WorkerDestination, WorkerPlugin, WorkerRemediationHandler

_WHERE = {
    "WorkerPlugin": "supervise._proxy",
    "WorkerConnector": "supervise._proxy",
    "WorkerRemediationHandler": "supervise._proxy",
    "WorkerDestination": "supervise._proxy",
    "WorkerStatus": "supervise._lifecycle",
    "WorkerState": "supervise._lifecycle",
    "WorkerSettings": "_settings",
    "PROTOCOL_VERSIONS": "_protocol",
}

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
    "PluginCallError",
    "RemotePluginError",
    "RemoteTraceback",
    "SandboxUnavailableError",
]


__getattr__, __dir__ = lazy_names(__name__, globals(), _WHERE)
