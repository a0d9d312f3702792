"""The pluggy markers of the plugin API, and the marker for error-propagating hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pluggy

PROJECT_NAME = "aperio"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

PROPAGATE_ATTRIBUTE = "aperio_propagate_errors"

_SpecFunction = TypeVar("_SpecFunction", bound=Callable[..., object])


def propagate_errors(function: _SpecFunction) -> _SpecFunction:
    """Mark a hookspec whose implementations' exceptions reach the caller.

    By default the host records an exception raised by one plugin against that
    plugin and lets the other plugins run. A hook whose callers must know about
    every failure (a validation hook, say) opts out of that with this marker.
    Returns the function unchanged apart from the marker attribute.
    """
    setattr(function, PROPAGATE_ATTRIBUTE, True)
    return function
