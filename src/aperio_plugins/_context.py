"""The host side of the invocation context: KV namespaced to the plugin, credentials limited to its manifest."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from pydantic import SecretStr

from aperio_hookspecs import Credential, CredentialNotGrantedError, DeadlineExceededError

from ._state import PluginKV

CredentialProvider = Callable[[str, str], "Credential | str"]
"""Called as `provider(plugin_id, scope)`; returns a credential (or a bare secret) minted for one invocation."""


class PluginKeyValueStore(msgspec.Struct, frozen=True):
    """The `KeyValueStore` of one plugin: every key lives in that plugin's namespace."""

    store: PluginKV
    plugin_id: str

    def get(self, key: str) -> str | None:
        return self.store.kv_get(self.plugin_id, key)

    def set(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"plugin {self.plugin_id!r}: KV values are strings, got {type(value).__name__}")
        self.store.kv_set(self.plugin_id, key, value)

    def delete(self, key: str) -> None:
        self.store.kv_delete(self.plugin_id, key)

    def keys(self, prefix: str = "") -> list[str]:
        return self.store.kv_keys(self.plugin_id, prefix)


class ScopedCredentials(msgspec.Struct, frozen=True):
    """Mints credentials only for the scopes the plugin's manifest declared."""

    plugin_id: str
    declared: frozenset[str]
    provider: CredentialProvider | None

    @property
    def scopes(self) -> frozenset[str]:
        return self.declared

    def get(self, scope: str) -> Credential:
        if scope not in self.declared:
            raise CredentialNotGrantedError(self.plugin_id, scope, "the plugin's manifest does not declare this scope")
        if self.provider is None:
            raise CredentialNotGrantedError(self.plugin_id, scope, "this host has no credential provider configured")
        minted = self.provider(self.plugin_id, scope)
        if isinstance(minted, str):
            return Credential(scope=scope, secret=SecretStr(minted))
        if minted.scope != scope:
            raise CredentialNotGrantedError(self.plugin_id, scope, f"provider minted scope {minted.scope!r} instead")
        return minted


class HostInvocationContext(msgspec.Struct, frozen=True):
    """The `InvocationContext` the host hands to one in-process invocation."""

    plugin_id: str
    invocation_id: str
    logger: Any
    deadline: float
    kv: PluginKeyValueStore
    credentials: ScopedCredentials

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise DeadlineExceededError(
                f"plugin {self.plugin_id!r}: invocation {self.invocation_id} ran past its deadline"
            )


def new_context(
    *,
    plugin_id: str,
    scopes: tuple[str, ...],
    store: PluginKV,
    provider: CredentialProvider | None,
    base_logger: Any,
    timeout: float,
) -> HostInvocationContext:
    """Return a fresh context for one invocation of `plugin_id` with `timeout` seconds to run."""
    invocation_id = uuid.uuid4().hex
    return HostInvocationContext(
        plugin_id=plugin_id,
        invocation_id=invocation_id,
        logger=base_logger.bind(plugin_id=plugin_id, invocation_id=invocation_id),
        deadline=time.monotonic() + timeout,
        kv=PluginKeyValueStore(store, plugin_id),
        credentials=ScopedCredentials(plugin_id, frozenset(scopes), provider),
    )
