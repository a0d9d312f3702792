"""Direct invocation of one plugin (`PluginHost.run`): which operation a payload asks for, and a
boundary check of what the plugin returned. A malformed result is the plugin's failure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from aperio_hookspecs import (
    DeliveryBatch,
    DeliveryReceipt,
    Payload,
    RemediationRequest,
    RemediationResult,
    SyncRequest,
    SyncResult,
)

from ._catalog import CatalogEntry, PluginRegistrations
from ._model import PluginKind
from ._validation import first_problem
from .errors import HookError, PluginCallError, WorkerCrashedError, WorkerTimeoutError


class InvalidResultError(Exception):
    """What a plugin returned does not match the envelope its operation promises."""


class HostValidatedResults:
    """Base of implementations whose results the host has itself just validated: a worker's
    proxies build each result with `model_validate_json` from the bytes the worker sent. `invoke`
    does not validate such a result a second time; it still checks that it answers the payload."""


class Operation(msgspec.Struct, frozen=True):
    kind: PluginKind
    target: str
    method: str
    result_type: type[BaseModel]

    @property
    def hook_name(self) -> str:
        return f"{self.kind.value}.{self.method}"


# Discriminated by `kind`, so that an error names the field of the payload
# the caller meant rather than every member of the union.
_PAYLOAD_ADAPTER: TypeAdapter[Payload] = TypeAdapter(Annotated[Payload, Field(discriminator="kind")])


def parse_payload(plugin_id: str, payload: Payload | Mapping[str, Any]) -> Payload:
    """Return `payload` as an envelope; a mapping is validated by its `kind`. Raises `HookError`."""
    if isinstance(payload, (SyncRequest, RemediationRequest, DeliveryBatch)):
        return payload
    try:
        return _PAYLOAD_ADAPTER.validate_python(payload)
    except ValidationError as exc:
        raise HookError(f"invalid payload for plugin {plugin_id!r}: {first_problem(exc)}") from None


def catalog_entry(plugin_id: str, registrations: PluginRegistrations, operation: Operation) -> CatalogEntry:
    """Return what `operation` targets among one plugin's registrations; raise `HookError` if it has none."""
    entry = registrations.get(operation.kind, operation.target)
    if entry is None:
        provided = ", ".join(registrations.names(operation.kind)) or "none"
        raise HookError(
            f"plugin {plugin_id!r} provides no {operation.kind.value} {operation.target!r} (it provides: {provided})",
            plugin_id=plugin_id,
        )
    return entry


def invoke(entry: CatalogEntry, operation: Operation, payload: Payload, context: object) -> BaseModel:
    """Call the registered implementation and return its validated result.

    Raises `PluginCallError` (with the plugin's exception as its cause) when the
    plugin raises or returns something that does not answer `payload`.
    """
    implementation = entry.implementation
    try:
        raw = getattr(implementation, operation.method)(context, payload)
        return check_result(payload, operation, raw, validated=isinstance(implementation, HostValidatedResults))
    except (WorkerTimeoutError, WorkerCrashedError):
        raise  # the worker, not the plugin's code, failed: callers handle these by type
    except (Exception, SystemExit) as exc:
        raise _call_error(entry, operation, exc) from exc


def _call_error(entry: CatalogEntry, operation: Operation, exc: BaseException) -> PluginCallError:
    return PluginCallError.raised_by(entry.plugin_id, f"{operation.kind.value} {operation.target!r}", exc)


def operation_for(payload: Payload) -> Operation:
    """Return the operation a payload asks for."""
    if isinstance(payload, SyncRequest):
        return Operation(PluginKind.CONNECTOR, payload.connector, "sync", SyncResult)
    if isinstance(payload, RemediationRequest):
        return Operation(PluginKind.REMEDIATION, payload.action, "remediate", RemediationResult)
    return Operation(PluginKind.DESTINATION, payload.destination, "deliver", DeliveryReceipt)


def _revalidate(result: object, result_type: type[BaseModel]) -> BaseModel:
    # A round trip through plain data re-checks instances made with
    # `model_construct`, which skip validation.
    if isinstance(result, result_type):
        data: object = result.model_dump(mode="python")
    elif isinstance(result, Mapping):
        data = result
    else:
        raise InvalidResultError(f"returned {type(result).__name__}, expected {result_type.__name__}")
    try:
        return result_type.model_validate(data)
    except ValidationError as exc:
        raise InvalidResultError(f"returned a malformed {result_type.__name__}: {first_problem(exc)}") from None


def check_result(payload: Payload, operation: Operation, result: object, *, validated: bool = False) -> BaseModel:
    """Return the validated result; raise `InvalidResultError` when it does not answer `payload`.

    `validated` says the host built `result` by validation itself; it is then not validated again
    if it is exactly the operation's result type.
    """
    if validated and type(result) is operation.result_type:
        checked: BaseModel = result
    else:
        checked = _revalidate(result, operation.result_type)
    if isinstance(checked, SyncResult) and checked.connector != operation.target:
        raise InvalidResultError(f"returned a SyncResult for connector {checked.connector!r}, not {operation.target!r}")
    if (
        isinstance(checked, RemediationResult)
        and isinstance(payload, RemediationRequest)
        and checked.request_id != payload.id
    ):
        raise InvalidResultError(f"answered request {checked.request_id!r}, not {payload.id!r}")
    if isinstance(checked, DeliveryReceipt) and isinstance(payload, DeliveryBatch):
        sent = {envelope.id for envelope in payload.envelopes}
        named = set(checked.accepted) | {rejected.id for rejected in checked.rejected}
        unknown = sorted(named - sent)
        if unknown:
            raise InvalidResultError(f"receipt names envelopes that were not in the batch: {', '.join(unknown[:5])}")
    return checked
