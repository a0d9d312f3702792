"""The operator API: the host as a service (optional extra `aperio-plugins[server]`).

- `router(host, authorize=…)`: the `/api/v1` routes as a FastAPI `APIRouter`, for a host
  application to mount with its own authorizer.
- `create_app(host, store)`: the whole application `aperio serve` runs (API, health, metrics).
- `Permission`, `Principal`, `Authorizer` (see `_principal`), `Tokens` and `bearer_authorizer`.

FastAPI is imported only when `router`, `create_app` or `bearer_authorizer` is first used, so that
`Permission`, `Principal` and `Tokens` work without the server extra (the CLI's `aperio token`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._principal import ALL_PERMISSIONS, Authorizer, Permission, Principal
from ._tokens import Authentication, IssuedToken, Tokens, parse_duration

if TYPE_CHECKING:
    from ._app import bearer_authorizer, create_app
    from ._metrics import ApiMetrics
    from ._routes import router

_LAZY = {
    "router": "._routes",
    "create_app": "._app",
    "bearer_authorizer": "._app",
    "ApiMetrics": "._metrics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "router",
    "create_app",
    "bearer_authorizer",
    "ApiMetrics",
    "Permission",
    "Principal",
    "Authorizer",
    "ALL_PERMISSIONS",
    "Tokens",
    "IssuedToken",
    "Authentication",
    "parse_duration",
]
