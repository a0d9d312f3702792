"""The invocation context: what the host hands to every call of a plugin.

These are protocols, not classes: the host implements them (in process or in a
worker), and `aperio_hookspecs.testing` implements them in memory for authors'
tests. Plugins keep no storage and no long-lived secrets of their own; both
come from the context, scoped to the plugin and to the invocation.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import AwareDatetime, BaseModel, ConfigDict, SecretStr


class PluginLogger(Protocol):
    """A structlog-style logger already bound to the plugin id and invocation id."""

    def debug(self, event: str, **fields: Any) -> Any: ...
    def info(self, event: str, **fields: Any) -> Any: ...
    def warning(self, event: str, **fields: Any) -> Any: ...
    def error(self, event: str, **fields: Any) -> Any: ...
    def bind(self, **fields: Any) -> PluginLogger: ...


class KeyValueStore(Protocol):
    """String key-value storage namespaced to one plugin, kept by the host."""

    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str = "") -> list[str]: ...


class Credential(BaseModel):
    """A secret minted for one invocation and one scope."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: str
    secret: SecretStr
    expires_at: AwareDatetime | None = None


class Credentials(Protocol):
    """Mints credentials for the scopes the plugin's manifest declared.

    `get` raises `CredentialNotGrantedError` for any other scope.
    """

    @property
    def scopes(self) -> frozenset[str]: ...

    def get(self, scope: str) -> Credential: ...


@runtime_checkable
class InvocationContext(Protocol):
    """Everything one invocation of a plugin may use."""

    @property
    def plugin_id(self) -> str: ...

    @property
    def invocation_id(self) -> str: ...

    @property
    def logger(self) -> PluginLogger: ...

    @property
    def deadline(self) -> float:
        """The `time.monotonic()` value by which the call must have returned."""
        ...

    def remaining(self) -> float:
        """Seconds left until the deadline, never negative."""
        ...

    def check_deadline(self) -> None:
        """Raise `DeadlineExceededError` if the deadline has passed."""
        ...

    @property
    def kv(self) -> KeyValueStore: ...

    @property
    def credentials(self) -> Credentials: ...
