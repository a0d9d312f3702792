"""A package's public names, each loaded from its module on first use (PEP 562).

`registry/` and `worker/` export their API this way: importing the package costs nothing, and
the worker process, which imports `worker/` first, loads nothing of the host's side. Imports only
`importlib`, so that it adds nothing to what either package costs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, namespace: dict[str, Any], where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the module `__getattr__` and `__dir__` of `package` (its `globals()`: `namespace`), which
    load each name of `where` (name -> module relative to `package`) from its module on first use.

    The `__getattr__` raises `AttributeError` for any other name.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value  # the next lookup does not come back here
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *where])

    return __getattr__, __dir__
