"""The hook specifications of plugin API 1.x.

Registration hooks are called once per plugin when it is registered; each
receives a `register` callback (the style of llm and datasette). Broadcast hooks
reach every enabled plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._markers import hookspec

if TYPE_CHECKING:
    # Annotations only: pluggy reads a hookspec's parameter names, never its annotations, so the host
    # registers these specs without importing the SDK's models (docs/performance.md, issue 11).
    from collections.abc import Callable

    from ._envelopes import Finding
    from ._extensions import Connector, Destination, RemediationHandler


@hookspec
def aperio_register_connectors(register: Callable[[Connector], None]) -> None:
    """Register the connectors this plugin provides."""


@hookspec
def aperio_register_remediations(register: Callable[[RemediationHandler], None]) -> None:
    """Register the remediation handlers this plugin provides."""


@hookspec
def aperio_register_destinations(register: Callable[[Destination], None]) -> None:
    """Register the destinations this plugin provides."""


@hookspec
def aperio_finding_raised(finding: Finding) -> None:
    """A finding was raised by any connector; broadcast to every enabled plugin."""


@hookspec
def aperio_host_shutdown() -> None:
    """The host is shutting down; release connections and flush buffers."""
