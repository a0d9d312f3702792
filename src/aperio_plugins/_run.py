"""One direct call of a plugin (`PluginHost.run`), through its circuit breaker, its failure recorded.

The same whether the plugin runs in process or in a worker: the host's records say what the
plugin registered and which breaker guards it, and the invocation context is built per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from aperio_hookspecs import Payload

from ._breaker import CircuitBreaker, incident_of
from ._catalog import CatalogEntry
from ._context import CredentialProvider, new_context
from ._guard import ErrorRecorder
from ._invoke import Operation, catalog_entry, invoke, operation_for, parse_payload
from ._model import PluginState
from ._plugin_records import Records
from ._state import StateStore
from .errors import LifecycleError, PluginCallError, WorkerCrashedError, WorkerTimeoutError
from .pipeline.register import circuit_open


def run_plugin(
    records: Records,
    plugin_id: str,
    payload: Payload | Mapping[str, Any],
    *,
    store: StateStore,
    provider: CredentialProvider | None,
    logger: Any,
    timeout: float,
    record: ErrorRecorder,
) -> BaseModel:
    """Parse `payload`, find what it targets among the plugin's registrations and call it (`call_plugin`).

    Raises `HookError` for a payload that is malformed or names nothing the plugin provides,
    `LifecycleError` if the plugin is not enabled, and what `call_plugin` raises.
    """
    envelope = parse_payload(plugin_id, payload)
    with records.lock:
        slot = records.slot(plugin_id)
        if slot.info.state is not PluginState.ENABLED:
            raise LifecycleError(
                f"plugin {plugin_id!r} is {slot.info.state.value}: it receives no calls", plugin_id=plugin_id
            )
        info, registrations = slot.info, slot.registrations
        breaker = slot.activated.breaker if slot.activated is not None else None
    operation = operation_for(envelope)
    entry = catalog_entry(plugin_id, registrations, operation)
    context = new_context(
        plugin_id=plugin_id,
        scopes=info.credential_scopes,
        store=store,
        provider=provider,
        base_logger=logger,
        timeout=timeout,
    )
    return call_plugin(entry, operation, envelope, context, breaker, record)


def call_plugin(
    entry: CatalogEntry,
    operation: Operation,
    envelope: Payload,
    context: object,
    breaker: CircuitBreaker | None,
    record: ErrorRecorder,
) -> BaseModel:
    """Return the validated result of `operation` on `entry`.

    Raises `CircuitOpenError` when the breaker refuses the call (it is not made), and
    `PluginCallError`, `WorkerTimeoutError` or `WorkerCrashedError` when it fails: each
    failure is recorded (`record`) and counted by the breaker once.
    """
    permit = None if breaker is None or breaker.closed else breaker.permit()
    if permit is not None and not permit.granted:
        raise circuit_open(entry.plugin_id, operation.hook_name, permit)
    try:
        result = invoke(entry, operation, envelope, context)
    except (PluginCallError, WorkerTimeoutError, WorkerCrashedError) as exc:
        record(operation.hook_name, exc.__cause__ or exc)
        if breaker is not None:
            breaker.record_failure(permit, incident_of(exc))  # one worker crash is one failure
        raise
    except BaseException:
        if breaker is not None and permit is not None:
            breaker.release(permit)  # interrupted (KeyboardInterrupt, say): no verdict on the plugin
        raise
    if breaker is not None and permit is not None:
        breaker.record_success(permit)  # only the probe's success closes an open breaker
    return result
