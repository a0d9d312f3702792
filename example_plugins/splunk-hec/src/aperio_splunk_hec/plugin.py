"""The hook implementations the `aperio.plugins` entry point names."""

from __future__ import annotations

from collections.abc import Callable

from aperio_hookspecs import Destination, hookimpl

from ._destination import SplunkHec


@hookimpl
def aperio_register_destinations(register: Callable[[Destination], None]) -> None:
    """Register the Splunk HEC destination."""
    register(SplunkHec())
