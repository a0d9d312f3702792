"""Errors a plugin may see from, or raise to, the host."""

from __future__ import annotations


class PluginAPIError(Exception):
    """Base of every error defined by the plugin API."""


class CredentialNotGrantedError(PluginAPIError):
    """A plugin asked for a credential scope that its manifest does not declare,
    or that the host could not mint for this invocation."""

    def __init__(self, plugin_id: str, scope: str, reason: str) -> None:
        super().__init__(f"plugin {plugin_id!r}: credential scope {scope!r} not granted: {reason}")
        self.plugin_id = plugin_id
        self.scope = scope
        self.reason = reason


class DeadlineExceededError(PluginAPIError):
    """The invocation ran past its deadline. Plugins raise it from
    `InvocationContext.check_deadline()`; the host raises it to callers."""


class PluginConfigurationError(PluginAPIError):
    """The configuration a plugin was invoked with is unusable. The message names the key,
    so that operators can tell a misconfiguration from a plugin bug."""


class ProviderError(PluginAPIError):
    """The provider a plugin talks to refused or failed a request.

    Plugins raise it with the provider's status so that operators see the
    provider's answer rather than a bare traceback.
    """

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        detail = f"{provider}: {message}" if status is None else f"{provider}: HTTP {status}: {message}"
        super().__init__(detail)
        self.provider = provider
        self.status = status
