"""What a worker answered, turned into the value a caller gets or the error it sees."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ...errors import PluginCallError, RemoteTraceback, WorkerBoundaryError
from .. import _protocol as protocol
from .._codec import EnvelopeData, EnvelopeError, envelope, materialize

_M = TypeVar("_M", bound=BaseModel)


def _validated(value: Any, result: type[_M]) -> _M:
    model = envelope(value, result) if isinstance(value, EnvelopeData) else value
    if isinstance(model, dict):
        try:
            model = result.model_validate(model)
        except ValidationError as exc:
            first = exc.errors()[0]
            location = ".".join(str(part) for part in first["loc"]) or "(root)"
            raise EnvelopeError(f"malformed {result.__name__}: {location}: {first['msg']}") from None
    if not isinstance(model, result):
        raise EnvelopeError(f"{type(model).__name__}, not a {result.__name__}")
    return model


def unwrap(plugin_id: str, label: str, answer: list[Any], result: type[_M] | None) -> Any:
    """Return the value of a RESULT answer, validated (into `result` when given).

    Raises `PluginCallError` (with the worker's traceback) for a plugin's exception, `WorkerBoundaryError`
    for a value that could not cross or a malformed envelope.
    """
    if answer[0] == protocol.ERROR:
        raise _error(plugin_id, label, answer)
    value = answer[2] if len(answer) == 3 else None
    if value is None and result is None:
        return None  # a hook's usual answer: nothing to validate
    try:
        return materialize(value) if result is None else _validated(value, result)
    except EnvelopeError as exc:
        raise WorkerBoundaryError(f"plugin {plugin_id!r}: {label} returned {exc}", plugin_id=plugin_id) from None


def _error(plugin_id: str, label: str, answer: list[Any]) -> Exception:
    details = answer[2] if len(answer) == 3 and isinstance(answer[2], dict) else {}
    type_name = str(details.get("type", "an unknown error"))
    message = str(details.get("message", ""))
    if details.get("boundary"):
        return WorkerBoundaryError(f"plugin {plugin_id!r}: {label}: {type_name}: {message}", plugin_id=plugin_id)
    text = str(details.get("traceback", ""))
    error = PluginCallError(
        f"{type_name}: {message} (raised by plugin {plugin_id!r} in its worker, in {label})",
        plugin_id=plugin_id,
        remote_type=type_name,
        remote_message=message,
        remote_traceback=text,
    )
    error.__cause__ = RemoteTraceback(text)
    return error
