"""The hook implementations the `aperio.plugins` entry point names."""

from __future__ import annotations

from collections.abc import Callable

from aperio_hookspecs import RemediationHandler, hookimpl

from ._handler import RemoveSharedLink


@hookimpl
def aperio_register_remediations(register: Callable[[RemediationHandler], None]) -> None:
    """Register the box.remove-shared-link handler."""
    register(RemoveSharedLink())
