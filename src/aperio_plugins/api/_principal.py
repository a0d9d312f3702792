"""Who is calling the operator API, and what they may do: the stable part the console builds on.

- `Permission`: `plugins:read` (list, info, events, metrics), `plugins:admin` (discover, enable,
  disable, reload, unload, install), `plugins:execute` (run a plugin once). A str enum, so that
  `Permission("plugins:read")` parses and `permission.value` is the wire form.
- `Principal`: a frozen (name, permissions) pair. `name` is the actor recorded in the audit trail;
  for API tokens it is the token's name, never the token.
- `Authorizer`: `Callable[[Request], Principal | None]`, given the incoming Starlette request.
  Return the principal, or None when the request carries no valid credentials (the API answers
  401); the router itself checks the permission (403). It runs in a worker thread, so it may block
  (a database lookup). `api.bearer_authorizer(store)` is the one `aperio serve` uses; a host
  application passes its own to `api.router(host, authorize=…)`.

This module imports neither FastAPI nor the host, so that the CLI and other front ends can use it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import msgspec

from ..errors import TokenError

if TYPE_CHECKING:
    from starlette.requests import Request


class Permission(str, enum.Enum):
    # `str, Enum` rather than `enum.StrEnum`: the host still supports Python 3.10.
    READ = "plugins:read"
    ADMIN = "plugins:admin"
    EXECUTE = "plugins:execute"

    def __str__(self) -> str:
        return self.value


ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)


class Principal(msgspec.Struct, frozen=True):
    """An authenticated caller: the name audited as actor, and the permissions it holds."""

    name: str
    permissions: frozenset[Permission]

    @classmethod
    def of(cls, name: str, permissions: Iterable[Permission | str]) -> Principal:
        """Return a principal; raise `TokenError` for a permission name that does not exist."""
        return cls(name, frozenset(parse_permission(permission) for permission in permissions))

    def allows(self, permission: Permission) -> bool:
        return permission in self.permissions


def parse_permission(value: Permission | str) -> Permission:
    """Return the permission named `value`; raise `TokenError` naming the ones that exist."""
    try:
        return Permission(value)
    except ValueError:
        known = ", ".join(permission.value for permission in Permission)
        raise TokenError(f"unknown permission {str(value)!r} (known: {known})") from None


Authorizer = Callable[["Request"], "Principal | None"]
