"""The whole exception tree of aperio-plugins.

One base, `AperioError`, whose `diagnostics()` gives a human a few lines on what
went wrong and what to do. Every error names the plugin and distribution when
they are known. The CLI is the one place that turns these into exit codes.
"""

from __future__ import annotations

from collections.abc import Mapping


class AperioError(Exception):
    """Base of every error aperio-plugins raises on purpose."""

    def __init__(self, message: str, *, plugin_id: str | None = None, distribution: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.plugin_id = plugin_id
        self.distribution = distribution

    def diagnostics(self, *, remote_traceback: bool = True) -> str:
        """Return a readable explanation, naming the plugin and distribution when known.

        `remote_traceback` matters only for an error raised in a worker, which can append its traceback.
        """
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
    """A plugin raised, or returned something malformed, during an invocation: the same type whether
    the plugin runs in this process or in a worker process.

    In process, the plugin's own exception is the `__cause__`. From a worker, `remote_type` is the
    qualified name of the exception class the plugin raised, `remote_message` its message and
    `remote_traceback` the traceback formatted in the worker (a `RemoteTraceback` is the `__cause__`);
    all three are None in process.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin_id: str | None = None,
        distribution: str | None = None,
        remote_type: str | None = None,
        remote_message: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message, plugin_id=plugin_id, distribution=distribution)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback

    @classmethod
    def raised_by(
        cls, plugin_id: str, where: str, exc: BaseException, *, distribution: str | None = None
    ) -> PluginCallError:
        """The error for `exc`, raised by plugin `plugin_id` in `where` (a hook, an operation), in the same
        words wherever the plugin ran: `exc` is the plugin's own exception, or the `PluginCallError` its
        worker's answer became, whose remote fields are kept. Raise it `from exc`."""
        if isinstance(exc, PluginCallError) and exc.remote_type is not None:
            return cls(
                f"plugin {plugin_id!r} failed in {where}: {exc.plugin_error_type}: {exc.remote_message}",
                plugin_id=plugin_id,
                distribution=distribution,
                remote_type=exc.remote_type,
                remote_message=exc.remote_message,
                remote_traceback=exc.remote_traceback,
            )
        message = f"plugin {plugin_id!r} failed in {where}: {type(exc).__name__}: {exc}"
        return cls(message, plugin_id=plugin_id, distribution=distribution)

    @property
    def plugin_error_type(self) -> str | None:
        """The class name of what the plugin raised, wherever it ran (None when that is not known)."""
        if self.remote_type is not None:
            return self.remote_type.rpartition(".")[2]
        return type(self.__cause__).__name__ if self.__cause__ is not None else None

    def diagnostics(self, *, remote_traceback: bool = True) -> str:
        """Return the base diagnostics and, for a plugin in a worker unless `remote_traceback` is False,
        the worker's traceback."""
        summary = super().diagnostics()
        if remote_traceback and self.remote_traceback:
            return f"{summary}\n{self.remote_traceback.rstrip()}"
        return summary


class CircuitOpenError(HookError):
    """A plugin's circuit breaker is open after repeated failures: the call failed fast, unmade.

    `retry_in` is the time in seconds until the breaker lets its probe call through; 0 while
    a half-open breaker's probe is in flight (calls go through again once it succeeds).
    """

    def __init__(self, message: str, *, plugin_id: str | None = None, retry_in: float = 0.0) -> None:
        super().__init__(message, plugin_id=plugin_id)
        self.retry_in = retry_in


class DeliveryError(HookError):
    """A batch could not be queued for a destination: no such destination, or malformed envelopes."""


class WorkerError(AperioError):
    """A call could not be served by the plugin's worker process, or the worker could not be started.

    Each kind of worker fault below is also a `HookError` (a call into a plugin failed), as it was
    when this class sat under `HookError`; both are one level below the base, so the tree stays two
    levels deep.
    """


class WorkerTimeoutError(WorkerError, HookError):
    """A call ran past its deadline; it was cancelled in the worker."""


class WorkerCrashedError(WorkerError, HookError):
    """The worker died (or was killed) while the call was in flight, or is down and not coming back.

    `returncode` is the worker's exit status (negative: the signal that ended it), when known.
    `generation` numbers the worker (1 for the first, one more for each restart): every call
    that failed because that worker went down carries the same number, so that its crash
    counts once.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin_id: str | None = None,
        distribution: str | None = None,
        returncode: int | None = None,
        generation: int | None = None,
    ) -> None:
        super().__init__(message, plugin_id=plugin_id, distribution=distribution)
        self.returncode = returncode
        self.generation = generation


class HandshakeError(WorkerError, HookError):
    """The worker did not come up: it said nothing in time, spoke no protocol version the host
    speaks, broke the protocol before it was ready, or could not load its plugin.

    `stage` names the pipeline stage that refused the plugin inside the worker
    (`inspect`, `verify`, `admit`, `load`, `register`), when that is what happened.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin_id: str | None = None,
        distribution: str | None = None,
        stage: str | None = None,
    ) -> None:
        super().__init__(message, plugin_id=plugin_id, distribution=distribution)
        self.stage = stage


class SandboxUnavailableError(WorkerError, HookError):
    """The operator requires the bubblewrap sandbox (`APERIO_PLUGIN_SANDBOX=bwrap`) and it cannot
    be set up here: the message names what is missing. The worker is not started; there is no fallback."""


class WorkerBoundaryError(WorkerError, HookError):
    """A value cannot cross the process boundary: a hook argument or result that is neither
    JSON-able nor an SDK envelope, a malformed envelope, or a wrapper hookimpl."""


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in the worker; set as the `__cause__` of the
    `PluginCallError` a worker's answer becomes, so that formatting the error shows where the plugin failed."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


# The name a plugin's exception in its worker had while it was a type of its own; the same class
# now, so that code written against either name catches the same fault wherever the plugin runs.
RemotePluginError = PluginCallError


class AperioWarning(UserWarning):
    """The one warning category of aperio-plugins (insecure settings, skipped checks)."""


class InvalidWheelError(AperioError):
    """A file is not a usable wheel: not a zip, no metadata, unsafe member names,
    or contents that contradict its own RECORD."""


class SigningError(AperioError):
    """A wheel could not be signed (no key, no identity token, a signing service refused)."""


class RegistryError(AperioError):
    """Getting a plugin from a registry failed: nothing was installed or removed."""


class IndexFormatError(RegistryError):
    """A plugin index (or lock file) is malformed, or uses a format version this client does not know."""


class StaleIndexError(RegistryError):
    """A plugin index is older than one already seen (rollback), older than the allowed age (freeze),
    or dated in the future."""


class ResolutionError(RegistryError):
    """No release of the plugin matches the request: unknown id or version, yanked, or incompatible."""


class DownloadError(RegistryError):
    """An artifact or index could not be fetched within the limits: scheme, redirect, size, time."""


class ArtifactRejectedError(RegistryError):
    """A downloaded artifact was refused before install: digest, signature, wheel contents, API.

    `signature` is the signature verdict reached before the refusal (status, detail, signer, verdict),
    when the signatures were checked: a refusal never hides whether the signature was good.
    """

    def __init__(
        self,
        message: str,
        *,
        plugin_id: str | None = None,
        distribution: str | None = None,
        signature: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__(message, plugin_id=plugin_id, distribution=distribution)
        self.signature = dict(signature) if signature is not None else None


class InstallError(RegistryError):
    """Installing or removing a plugin failed; the plugins directory was left as it was."""


class PluginCheckError(AperioError):
    """A plugin project or wheel fails a check a strict host would make (`aperio plugin check`, `sign`),
    or cannot be built or scaffolded."""


class TokenError(AperioError):
    """An operator API token request is invalid: unknown permission, bad expiry, a name in use or unknown.

    Never carries the token itself."""
