"""The whole exception tree of aperio-plugins.

One base, `AperioError`, whose `diagnostics()` gives a human a few lines on what
went wrong and what to do. Every error names the plugin and distribution when
they are known. The CLI is the one place that turns these into exit codes.
"""

from __future__ import annotations


class AperioError(Exception):
    """Base of every error aperio-plugins raises on purpose."""

    def __init__(self, message: str, *, plugin_id: str | None = None, distribution: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.plugin_id = plugin_id
        self.distribution = distribution

    def diagnostics(self) -> str:
        """Return a readable explanation, naming the plugin and distribution when known."""
        lines = [self.message]
        if self.plugin_id is not None:
            lines.append(f"plugin: {self.plugin_id}")
        if self.distribution is not None:
            lines.append(f"distribution: {self.distribution}")
        return "\n".join(lines)


class ConfigurationError(AperioError):
    """A setting (environment variable or constructor argument) is invalid."""


class StateStoreError(AperioError):
    """The host's state store cannot be opened, read or written."""


class ManifestError(AperioError):
    """A plugin's manifest or metadata is missing or malformed."""


class VerificationError(AperioError):
    """A plugin's files or signature failed verification."""


class LifecycleError(AperioError):
    """An operator action is not possible in the plugin's current state."""


class UnknownPluginError(LifecycleError):
    """No plugin with that id is known to the host."""


class TamperedFileError(VerificationError, ImportError):
    """A plugin file differs from what was verified, or is not in the signed list at all.

    An `ImportError`, so the import machinery propagates it like any failed import;
    a `VerificationError`, so the host can tell tampering from a missing dependency.
    `path` is the file at fault and `name` the module being imported, as on `ImportError`.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin_id: str | None = None,
        distribution: str | None = None,
        path: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(message, plugin_id=plugin_id, distribution=distribution)
        self.path = path
        self.name = name


class PluginLoadError(AperioError):
    """A plugin could not be imported or registered."""


class HookError(AperioError):
    """A call into a plugin failed."""


class PluginCallError(HookError):
    """A plugin raised, or returned something malformed, during an invocation."""


class CircuitOpenError(HookError):
    """A plugin's circuit breaker is open after repeated failures: the call failed fast, unmade."""

    def __init__(self, message: str, *, plugin_id: str | None = None, retry_in: float = 0.0) -> None:
        super().__init__(message, plugin_id=plugin_id)
        self.retry_in = retry_in


class AperioWarning(UserWarning):
    """The one warning category of aperio-plugins (insecure settings, skipped checks)."""


class InvalidWheelError(AperioError):
    """A file is not a usable wheel: not a zip, no metadata, unsafe member names,
    or contents that contradict its own RECORD."""


class SigningError(AperioError):
    """A wheel could not be signed (no key, no identity token, a signing service refused)."""
