"""`WorkerPlugin`: what the host registers in place of a plugin that runs in a worker process.

It carries one plain function per hookimpl of the real plugin, in its instance
`__dict__` (where every pluggy version looks), generated with the real
parameter names and carrying the real marker options as `aperio_impl`, so the
host's pipeline (`pipeline.register.prepare`, the guard, pluggy) treats it exactly
like an imported module. Each function forwards its call to the worker.
Registration hooks are answered locally, with proxies for what the plugin
registered in its worker.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from aperio_hookspecs import (
    Connector,
    DeliveryBatch,
    DeliveryReceipt,
    Destination,
    InvocationContext,
    RemediationHandler,
    RemediationRequest,
    RemediationResult,
    SyncRequest,
    SyncResult,
)

from ..._audit import default_audit_logger, default_plugin_logger
from ..._catalog import REGISTRATION_HOOKS
from ..._invoke import HostValidatedResults
from ..._settings import HostSettings
from ...errors import WorkerBoundaryError
from .. import _protocol as protocol
from .._codec import envelope_ext, find_unpackable
from .._settings import WorkerSettings
from ._answers import unwrap
from ._description import Description, HookDescription, RegistrationDescription
from ._lifecycle import FailureCallback, Lifecycle, WorkerStatus

_M = TypeVar("_M", bound=BaseModel)


class _Invoker:
    """Sends `sync`, `remediate` and `deliver` to the worker, with the caller's context."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self._lifecycle = lifecycle

    def invoke(
        self, kind: str, name: str, label: str, context: InvocationContext, payload: BaseModel, result: type[_M]
    ) -> _M:
        lifecycle = self._lifecycle
        # The context's own deadline (`time.monotonic()` based, as the SDK's protocol says); else
        # what its `remaining()` says, else the worker's call timeout.
        deadline = getattr(context, "deadline", None)
        if type(deadline) is not float:
            remaining = getattr(context, "remaining", None)
            timeout = float(remaining()) if callable(remaining) else lifecycle.options.call_timeout
            deadline = time.monotonic() + timeout
        process = lifecycle.acquire(deadline)
        scopes = sorted(map(str, getattr(context.credentials, "scopes", ())))
        # What is left after waiting for a restart, so that the plugin's deadline is the caller's.
        left = max(0.0, deadline - time.monotonic())
        try:
            ext = envelope_ext(payload)
            # Every other item is a str, a float or a list of str made here: encoded without checks.
            item, encode = (payload, protocol.pack) if ext is None else (ext, protocol.pack_plain)
            message = [protocol.INVOKE, None, kind, name, item, left, str(context.invocation_id), scopes]
            answer = process.call(message, context, label, deadline, encode)
        except (TypeError, ValueError, OverflowError) as exc:
            raise WorkerBoundaryError(
                f"plugin {lifecycle.plugin_id!r}: the request to {label} cannot cross the process boundary: {exc}",
                plugin_id=lifecycle.plugin_id,
            ) from None
        checked: _M = unwrap(lifecycle.plugin_id, label, answer, result)
        return checked


class WorkerConnector(Connector, HostValidatedResults):
    """A connector whose `sync` runs in its plugin's worker process (its results validated by the host)."""

    def __init__(self, invoker: _Invoker) -> None:
        self._aperio_invoker = invoker
        self._aperio_label = f"connector {self.name!r}"

    def sync(self, context: InvocationContext, request: SyncRequest) -> SyncResult:
        return self._aperio_invoker.invoke("connector", self.name, self._aperio_label, context, request, SyncResult)


class WorkerRemediationHandler(RemediationHandler, HostValidatedResults):
    """A remediation handler whose `remediate` runs in its plugin's worker process."""

    def __init__(self, invoker: _Invoker) -> None:
        self._aperio_invoker = invoker
        self._aperio_label = f"remediation {self.action.name!r}"

    def remediate(self, context: InvocationContext, request: RemediationRequest) -> RemediationResult:
        name, label = self.action.name, self._aperio_label
        return self._aperio_invoker.invoke("remediation", name, label, context, request, RemediationResult)


class WorkerDestination(Destination, HostValidatedResults):
    """A destination whose `deliver` runs in its plugin's worker process."""

    def __init__(self, invoker: _Invoker) -> None:
        self._aperio_invoker = invoker
        self._aperio_label = f"destination {self.name!r}"

    def deliver(self, context: InvocationContext, batch: DeliveryBatch) -> DeliveryReceipt:
        return self._aperio_invoker.invoke(
            "destination", self.name, self._aperio_label, context, batch, DeliveryReceipt
        )


def _registration_proxy(row: RegistrationDescription, invoker: _Invoker) -> Any:
    # One subclass per registration: `name`, `provider` and `action` are class variables in the SDK.
    base: type[Any]
    attributes: dict[str, Any]
    if row.kind == "connector":
        base, attributes = WorkerConnector, {"name": row.name, "provider": row.provider, "description": row.description}
    elif row.kind == "remediation":
        base, attributes = WorkerRemediationHandler, {"action": row.action}
    else:
        base, attributes = WorkerDestination, {"name": row.name, "description": row.description}
    cls = type(base.__name__, (base,), {**attributes, "__module__": __name__})
    return cls(invoker)


def _forwarder(hook: HookDescription, send: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    """Return a function named after `hook`, with its parameters, that passes its arguments to `send`."""
    params = ", ".join(hook.params)
    arguments = ", ".join(f"{name!r}: {name}" for name in hook.params)
    source = f"def {hook.hook}({params}):\n    return _aperio_send({{{arguments}}})\n"
    namespace: dict[str, Any] = {"_aperio_send": send}
    # The names were checked to be plain identifiers (see _description.is_plain_identifier).
    exec(compile(source, f"<aperio worker forwarder for {hook.hook}>", "exec"), namespace)  # noqa: S102
    function: Callable[..., Any] = namespace[hook.hook]
    function.aperio_impl = dict(hook.options)  # type: ignore[attr-defined]
    return function


class WorkerPlugin:
    """Stands in for a plugin object; its hookimpls run in a supervised worker process.

    Create it with `WorkerPlugin.start(...)`; end it with `stop()`.
    """

    def __init__(self, lifecycle: Lifecycle, description: Description) -> None:
        """Build the stand-in from a started worker's description. Raises `WorkerBoundaryError`."""
        plugin_id = lifecycle.plugin_id
        wrappers = [hook.hook for hook in description.hooks if hook.is_wrapper]
        if wrappers:
            raise WorkerBoundaryError(
                f"plugin {plugin_id!r} implements {', '.join(wrappers)} as a wrapper (wrapper=True or"
                " hookwrapper=True): a wrapper runs around the other plugins' implementations inside the host"
                " and cannot cross a process boundary; run this plugin in process",
                plugin_id=plugin_id,
            )
        clashes = [hook.hook for hook in description.hooks if hasattr(WorkerPlugin, hook.hook)]
        if clashes:
            raise WorkerBoundaryError(
                f"plugin {plugin_id!r} implements a hook named {clashes[0]!r}, which the worker stand-in cannot carry",
                plugin_id=plugin_id,
            )
        self._aperio_lifecycle = lifecycle
        self._aperio_description = description
        invoker = _Invoker(lifecycle)
        self._aperio_registrations = tuple(_registration_proxy(row, invoker) for row in description.registrations)
        for hook in description.hooks:
            self.__dict__[hook.hook] = _forwarder(hook, self._sender(hook))

    @classmethod
    def start(
        cls,
        plugin_id: str,
        *,
        settings: HostSettings,
        search_path: Iterable[str | Path] | None = None,
        options: WorkerSettings | None = None,
        audit_logger: Any = None,
        logger: Any = None,
        on_failure: FailureCallback | None = None,
        network: bool = False,
    ) -> WorkerPlugin:
        """Start a worker for `plugin_id`, wait until it has loaded and described the plugin, and
        return the stand-in to register.

        `settings` and `search_path` are the host's (the worker re-runs the
        pipeline with them); `audit_logger` receives the `plugin.worker.*`
        events, `logger` the worker's stderr lines and the plugin's log events
        outside invocations; `on_failure(plugin_id, error)` is called from a
        supervisor thread each time the worker fails after it was ready.
        Raises `HandshakeError` when the worker does not come up (its `stage`
        says which pipeline stage refused the plugin inside the worker) and
        `WorkerBoundaryError` for a plugin that cannot run in a worker.

        `network` keeps the host's network in the worker's sandbox (the host
        passes what the plugin's manifest asks for); without it the worker has
        none. `SandboxUnavailableError` when `settings` require a sandbox that
        cannot be set up here.
        """
        entries = sys.path if search_path is None else search_path
        lifecycle = Lifecycle(
            plugin_id,
            settings=settings,
            search_path=[str(entry) for entry in entries],
            options=options or WorkerSettings(),
            audit=audit_logger if audit_logger is not None else default_audit_logger(),
            logger=logger if logger is not None else default_plugin_logger(),
            on_failure=on_failure,
            network=network,
        )
        description = lifecycle.start()
        try:
            return cls(lifecycle, description)
        except WorkerBoundaryError:
            lifecycle.stop(0.0)
            raise

    def _sender(self, hook: HookDescription) -> Callable[[dict[str, Any]], Any]:
        registration = REGISTRATION_HOOKS.get(hook.hook)
        if registration is not None:
            kind = registration[0].value
            proxies = [proxy for proxy in self._aperio_registrations if _kind_of(proxy) == kind]

            def register_locally(arguments: dict[str, Any]) -> None:
                register = arguments.get("register")
                for proxy in proxies if register is not None else ():
                    register(proxy)  # type: ignore[misc]

            return register_locally
        lifecycle = self._aperio_lifecycle
        label, name = f"hook {hook.hook}", hook.hook
        # Bound once: this function runs on every call of the hook, and each lookup is paid there.
        acquire, call_timeout, monotonic = lifecycle.acquire, lifecycle.options.call_timeout, time.monotonic
        plain_encode, checking_encode, kind = protocol.pack_plain, protocol.pack, protocol.HOOK

        def send(arguments: dict[str, Any]) -> Any:
            deadline = monotonic() + call_timeout
            process = acquire(deadline)
            try:
                # Arguments that are all SDK envelopes (the usual case) are encoded without checks;
                # anything else goes through the checking encoder, which refuses what cannot cross.
                exts = {key: envelope_ext(value) for key, value in arguments.items()}
                plain = None not in exts.values()
                left = max(0.0, deadline - monotonic())
                message = [kind, None, name, exts if plain else arguments, left]
                answer = process.call(message, None, label, deadline, plain_encode if plain else checking_encode)
            except (TypeError, ValueError, OverflowError):
                raise _argument_error(lifecycle.plugin_id, name, arguments) from None
            return unwrap(lifecycle.plugin_id, label, answer, None)

        return send

    # -- what the host may ask of it ------------------------------------------------

    @property
    def plugin_id(self) -> str:
        return self._aperio_lifecycle.plugin_id

    @property
    def description(self) -> Description:
        """What the worker said its plugin provides."""
        return self._aperio_description

    def status(self) -> WorkerStatus:
        """State, pid, restarts and last error of the worker."""
        return self._aperio_lifecycle.status()

    def restart(self) -> None:
        """Forget past failures and replace the worker (after it gave up, say). Returns at once."""
        self._aperio_lifecycle.restart()

    def stop(self, timeout: float | None = None) -> None:
        """Let calls in flight finish for up to `timeout` seconds (default: `stop_timeout`), then end
        the worker: stdin closed, SIGTERM, SIGKILL. Idempotent; later calls raise `WorkerError`."""
        self._aperio_lifecycle.stop(timeout)

    def __repr__(self) -> str:
        status = self.status()
        return f"<worker plugin {self.plugin_id} ({status.state.value}, pid {status.pid})>"


def _kind_of(proxy: object) -> str:
    if isinstance(proxy, WorkerConnector):
        return "connector"
    return "remediation" if isinstance(proxy, WorkerRemediationHandler) else "destination"


def _argument_error(plugin_id: str, hook: str, arguments: dict[str, Any]) -> WorkerBoundaryError:
    culprit = find_unpackable(arguments)
    where, reason = culprit if culprit is not None else ("?", "it cannot be encoded")
    return WorkerBoundaryError(
        f"plugin {plugin_id!r}: hook {hook}: argument {where!r} cannot cross the process boundary: {reason}",
        plugin_id=plugin_id,
    )
