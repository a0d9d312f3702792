"""Rebuild, in the worker, an envelope the host serialized from a model it already holds: no second validation.

The host validated the request when it built it; the worker trusts its host
(the reverse is never true: what a worker returns is validated on the host,
`_answers.py`). So the worker parses the envelope's JSON with msgspec and puts
each field's value in place the way pydantic would have stored it: nested
models rebuilt, enum members looked up, datetimes parsed, arrays made tuples
where the field is a tuple. A builder per model is generated once from its
field annotations; a model, or a payload, that it does not cover (a field type
not listed below, a missing or extra key) is validated by pydantic instead, so
the result is always the model the plugin would get in process.
docs/worker-protocol.md has the measurements that chose this.
"""

from __future__ import annotations

import datetime
import enum
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from pydantic import AwareDatetime, BaseModel, JsonValue
from pydantic.fields import FieldInfo

from .._codec import MODELS, EnvelopeData, envelope

Convert = Callable[[Any], Any]
Builder = Callable[[Any], BaseModel]

_JSON = msgspec.json.Decoder()
_new = object.__new__
_set = object.__setattr__


class _Uncovered(Exception):
    """No builder can rebuild this value: validate it instead."""


def _datetime_before_311(value: str) -> datetime.datetime:
    # pydantic writes UTC as "Z", which fromisoformat reads only from Python 3.11 on.
    return datetime.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


_datetime: Convert = datetime.datetime.fromisoformat if sys.version_info >= (3, 11) else _datetime_before_311


def _optional(inner: Convert) -> Convert:
    return lambda value: None if value is None else inner(value)


def _tuple_of(inner: Convert | None) -> Convert:
    if inner is None:
        return tuple
    return lambda value: tuple(map(inner, value))


def _by_tag(field: str, builders: Mapping[Any, Builder]) -> Convert:
    return lambda value: builders[value[field]](value)


def _converter(annotation: Any) -> Convert | None:
    """Return how to turn a JSON value into the field's stored value (None: as it is); raise `_Uncovered`."""
    origin = typing.get_origin(annotation)
    if annotation in (str, int, bool, type(None)) or origin is typing.Literal or annotation is JsonValue:
        return None
    if annotation is float:
        return float
    if annotation is AwareDatetime or annotation is datetime.datetime:
        return _datetime
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation._value2member_map_.__getitem__
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _builder(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Annotated:
        discriminator = next((m.discriminator for m in arguments[1:] if isinstance(m, FieldInfo)), None)
        if isinstance(discriminator, str):
            choices = {}
            for model in typing.get_args(arguments[0]):
                choices[model.model_fields[discriminator].default] = _builder(model)
            return _by_tag(discriminator, choices)
        return _converter(arguments[0])
    if origin in (types.UnionType, typing.Union):
        present = [argument for argument in arguments if argument is not type(None)]
        if len(present) != 1:
            raise _Uncovered(f"a union of {present}")
        inner = _converter(present[0])
        return None if inner is None else _optional(inner)
    if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        return _tuple_of(_converter(arguments[0]))
    if origin is dict and len(arguments) == 2 and arguments[0] is str and _converter(arguments[1]) is None:
        return None
    raise _Uncovered(f"a field of type {annotation!r}")


def _builder(model: type[BaseModel]) -> Builder:
    """Return a function that makes `model` from its JSON data, generated with the model's field names
    and converters spelled out (a generic loop over a plan cost a third more per envelope)."""
    if model.__private_attributes__ or model.model_config.get("extra") != "forbid":
        raise _Uncovered(f"{model.__name__} keeps private or extra attributes")
    namespace: dict[str, Any] = {"model": model, "new": _new, "put": _set, "Uncovered": _Uncovered}
    items = []
    for number, (name, field) in enumerate(model.model_fields.items()):
        if not name.isidentifier():
            raise _Uncovered(f"a field named {name!r}")
        convert = _converter(field.annotation)
        if convert is None:
            items.append(f"{name!r}: data[{name!r}]")
        else:
            namespace[f"convert{number}"] = convert
            items.append(f"{name!r}: convert{number}(data[{name!r}])")
    source = f"""def build(data):
    if type(data) is not dict or len(data) != {len(items)}:
        raise Uncovered("a missing or extra key")
    try:
        values = {{{", ".join(items)}}}
    except (KeyError, TypeError, ValueError) as exc:
        raise Uncovered(str(exc)) from None
    instance = new(model)
    put(instance, "__dict__", values)
    put(instance, "__pydantic_fields_set__", set(values))
    put(instance, "__pydantic_extra__", None)
    put(instance, "__pydantic_private__", None)
    return instance
"""
    # The names are the model's own field names, checked to be identifiers above.
    exec(compile(source, f"<aperio rebuild of {model.__name__}>", "exec"), namespace)  # noqa: S102
    build: Builder = namespace["build"]
    return build


def _plans() -> dict[str, Builder | None]:
    plans: dict[str, Builder | None] = {}
    for tag, model in MODELS.items():
        try:
            plans[tag] = _builder(model)
        except _Uncovered:
            plans[tag] = None
    return plans


_PLANS = _plans()  # derived from the SDK's fixed set of models, like the codec's tag table


def rebuild(value: EnvelopeData) -> BaseModel:
    """Return the model of an envelope the host sent, without validating what the host validated.

    Falls back to validation (`envelope`) where no builder covers it, and
    raises `EnvelopeError` as that does for an unknown kind or bad data.
    """
    build = _PLANS.get(value.tag)
    if build is not None:
        try:
            return build(_JSON.decode(value.data))
        except (_Uncovered, msgspec.DecodeError, RecursionError):
            pass
    return envelope(value)
