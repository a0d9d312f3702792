"""The hook implementations the `aperio.plugins` entry point names."""

from __future__ import annotations

from collections.abc import Callable

from aperio_hookspecs import Connector, hookimpl

from ._connector import BoxConnector


@hookimpl
def aperio_register_connectors(register: Callable[[Connector], None]) -> None:
    """Register the Box connector."""
    register(BoxConnector())
