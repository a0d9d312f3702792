"""The worker side of the invocation context: each operation is a request to the host.

The host keeps the KV store and mints credentials; the worker asks for them over
the channel, one request at a time, while the call that needs them is running.
A context is closed when its call returns: a plugin thread that kept it gets an
error rather than a request about a call the host has forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from aperio_hookspecs import Credential, CredentialNotGrantedError, DeadlineExceededError, PluginAPIError

Request = Callable[["RemoteContext", str, list[Any]], Any]
"""Sends one context operation for a call and returns the host's answer (raises what the host raised)."""
SendLog = Callable[[int, str, str, dict[str, Any]], None]

_BUILTIN_ERRORS: dict[str, type[Exception]] = {"TypeError": TypeError, "ValueError": ValueError, "KeyError": KeyError}


def remote_exception(
    context: RemoteContext, operation: str, arguments: list[Any], type_name: str, message: str
) -> Exception:
    """Return the exception a plugin sees when the host refused a context operation."""
    if type_name == "CredentialNotGrantedError":
        scope = str(arguments[0]) if arguments else "?"
        return CredentialNotGrantedError(context.plugin_id, scope, message)
    if type_name == "DeadlineExceededError":
        return DeadlineExceededError(message)
    builtin = _BUILTIN_ERRORS.get(type_name)
    if builtin is not None:
        return builtin(message)
    return PluginAPIError(f"the host could not serve {operation}: {type_name}: {message}")


class RemoteLogger:
    """A `PluginLogger` whose events become structlog events of the host, bound to the invocation."""

    def __init__(self, call_id: int, send: SendLog, bound: dict[str, Any] | None = None) -> None:
        self._call_id = call_id
        self._send = send
        self._bound = bound or {}

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self._send(self._call_id, level, str(event), {**self._bound, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def bind(self, **fields: Any) -> RemoteLogger:
        return RemoteLogger(self._call_id, self._send, {**self._bound, **fields})


class RemoteKeyValueStore:
    """The plugin's KV namespace, kept by the host."""

    def __init__(self, context: RemoteContext, request: Request) -> None:
        self._context = context
        self._request = request

    def get(self, key: str) -> str | None:
        value = self._request(self._context, "kv.get", [key])
        return None if value is None else str(value)

    def set(self, key: str, value: str) -> None:
        if not isinstance(value, str):  # refused here too, so the plugin's traceback points at its own line
            raise TypeError(f"plugin {self._context.plugin_id!r}: KV values are strings, got {type(value).__name__}")
        self._request(self._context, "kv.set", [key, value])

    def delete(self, key: str) -> None:
        self._request(self._context, "kv.delete", [key])

    def keys(self, prefix: str = "") -> list[str]:
        return [str(key) for key in self._request(self._context, "kv.keys", [prefix])]


class RemoteCredentials:
    """Credentials minted by the host for this invocation, only for the scopes its manifest declares."""

    def __init__(self, context: RemoteContext, request: Request, scopes: frozenset[str]) -> None:
        self._context = context
        self._request = request
        self._scopes = scopes

    @property
    def scopes(self) -> frozenset[str]:
        return self._scopes

    def get(self, scope: str) -> Credential:
        minted = self._request(self._context, "credentials.get", [scope])
        try:
            return Credential.model_validate(minted)
        except ValidationError as exc:
            raise PluginAPIError(f"the host sent a malformed credential for scope {scope!r}: {exc}") from None


class RemoteContext:
    """The `InvocationContext` of one call served by a worker."""

    def __init__(
        self,
        *,
        call_id: int,
        plugin_id: str,
        invocation_id: str,
        timeout: float,
        scopes: frozenset[str],
        request: Request,
        send_log: SendLog,
    ) -> None:
        self.call_id = call_id
        self._plugin_id = plugin_id
        self._invocation_id = invocation_id
        self._deadline = time.monotonic() + timeout
        self._scopes = scopes
        self._request = request
        self._send_log = send_log
        # Made on first use: most calls never touch them, and every call pays for what it makes.
        self._logger: RemoteLogger | None = None
        self._kv: RemoteKeyValueStore | None = None
        self._credentials: RemoteCredentials | None = None
        self.cancelled = False
        self.closed = False

    @property
    def plugin_id(self) -> str:
        return self._plugin_id

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def logger(self) -> RemoteLogger:
        if self._logger is None:
            self._logger = RemoteLogger(self.call_id, self._send_log)
        return self._logger

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def kv(self) -> RemoteKeyValueStore:
        if self._kv is None:
            self._kv = RemoteKeyValueStore(self, self._request)
        return self._kv

    @property
    def credentials(self) -> RemoteCredentials:
        if self._credentials is None:
            self._credentials = RemoteCredentials(self, self._request, self._scopes)
        return self._credentials

    def remaining(self) -> float:
        return 0.0 if self.cancelled else max(0.0, self._deadline - time.monotonic())

    def check_deadline(self) -> None:
        if self.cancelled:
            raise DeadlineExceededError(f"plugin {self._plugin_id!r}: invocation {self._invocation_id} was cancelled")
        if time.monotonic() >= self._deadline:
            raise DeadlineExceededError(
                f"plugin {self._plugin_id!r}: invocation {self._invocation_id} ran past its deadline"
            )
