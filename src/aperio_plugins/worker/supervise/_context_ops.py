"""The host serves a worker's context requests from the context the caller passed in.

So the host keeps storage and secrets: a worker gets a credential only by
asking for it during a call, and only for a scope the host-side context grants
(the manifest's scopes); it never sees the host's provider or store.
"""

from __future__ import annotations

from typing import Any

from aperio_hookspecs import PluginAPIError


def _strings(operation: str, arguments: Any, count: int) -> list[str]:
    if not isinstance(arguments, list) or len(arguments) != count or not all(isinstance(a, str) for a in arguments):
        raise TypeError(f"{operation} takes {count} string argument(s)")
    return arguments


def perform(context: Any, operation: Any, arguments: Any) -> Any:
    """Run one context operation against the host-side `context`; return a value that can cross.

    Raises whatever the context raises (`CredentialNotGrantedError`, say), and
    TypeError or ValueError for a malformed request.
    """
    if context is None:
        raise PluginAPIError("this call has no invocation context")
    if operation == "kv.get":
        (key,) = _strings(operation, arguments, 1)
        return context.kv.get(key)
    if operation == "kv.set":
        key, value = _strings(operation, arguments, 2)
        context.kv.set(key, value)
        return None
    if operation == "kv.delete":
        (key,) = _strings(operation, arguments, 1)
        context.kv.delete(key)
        return None
    if operation == "kv.keys":
        (prefix,) = _strings(operation, arguments, 1)
        return [str(key) for key in context.kv.keys(prefix)]
    if operation == "credentials.get":
        (scope,) = _strings(operation, arguments, 1)
        credential = context.credentials.get(scope)
        expires = credential.expires_at.isoformat() if credential.expires_at is not None else None
        return {"scope": credential.scope, "secret": credential.secret.get_secret_value(), "expires_at": expires}
    raise ValueError(f"unknown context operation {str(operation)[:40]!r}")
