"""How values cross the boundary: JSON-able data as msgpack, SDK envelopes as a tagged extension.

An envelope travels as msgpack extension type 1 holding `tag`, a newline, and
the model's JSON. The host validates every envelope a worker sends back into
its model (`materialize`, `envelope`); the worker rebuilds what the host sent
without validating it again (`_rebuild.py`). Any other object is refused with
a `TypeError` that names its type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information
import msgspec
from pydantic import BaseModel, ValidationError

from aperio_hookspecs import ENVELOPE_MODELS, Actor, RejectedEnvelope, Resource

ENVELOPE_EXT = 1


def _tag(model: type[BaseModel]) -> str:
    kind = model.model_fields.get("kind")
    if kind is not None and isinstance(kind.default, str):
        return kind.default
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()


_CROSSING: tuple[type[BaseModel], ...] = (*ENVELOPE_MODELS, Actor, Resource, RejectedEnvelope)
MODELS: Mapping[str, type[BaseModel]] = {_tag(model): model for model in _CROSSING}
_TAGS: Mapping[type, bytes] = {model: tag.encode() + b"\n" for tag, model in MODELS.items()}


class EnvelopeData:
    """An envelope as received: its tag and JSON, not yet validated."""

    __slots__ = ("data", "tag")

    def __init__(self, tag: str, data: bytes) -> None:
        self.tag = tag
        self.data = data

    def __repr__(self) -> str:
        return f"<{self.tag} envelope, {len(self.data)} bytes>"


class EnvelopeError(ValueError):
    """A received envelope is unknown or does not validate; the message says where."""


_new_ext = tuple.__new__  # ExtType is a namedtuple whose Python __new__ only re-checks what is fixed here


def pack_default(value: object) -> msgpack.ExtType:
    """msgpack's `default`: encode an SDK envelope; raise TypeError for anything else."""
    cls = type(value)
    prefix = _TAGS.get(cls)  # an exact type match: a subclass of an envelope is not one
    if prefix is not None:
        # The model's own serializer: what model_dump_json() calls, without its per-call option handling.
        data = prefix + cls.__pydantic_serializer__.to_json(value)  # type: ignore[attr-defined]
        return _new_ext(msgpack.ExtType, (ENVELOPE_EXT, data))
    if isinstance(value, BaseModel):
        raise TypeError(f"{cls.__name__} is a pydantic model but not an SDK envelope")
    raise TypeError(f"{cls.__name__} is neither JSON-able nor an SDK envelope")


def envelope_ext(value: object) -> msgspec.msgpack.Ext | None:
    """Return `value` as the extension that carries it if it is exactly an SDK envelope, else None.

    For messages encoded with `_protocol.pack_plain`: the same bytes as `pack_default` makes, without
    the encoder's round trip through a Python callback and a namedtuple.
    """
    cls = type(value)
    prefix = _TAGS.get(cls)
    if prefix is None:
        return None
    return msgspec.msgpack.Ext(ENVELOPE_EXT, prefix + cls.__pydantic_serializer__.to_json(value))  # type: ignore[attr-defined]


def ext_hook(code: int, data: bytes | memoryview) -> EnvelopeData:
    """The decoder's `ext_hook`: keep an envelope for validation by whoever consumes it.

    Raises `EnvelopeError` for another extension type, which the frame decoder
    reports as a protocol violation.
    """
    tag, sep, body = bytes(data).partition(b"\n")
    if code != ENVELOPE_EXT or not sep:
        raise EnvelopeError(f"unknown msgpack extension type {code}")
    return EnvelopeData(tag.decode("ascii", "replace"), body)


def envelope(value: EnvelopeData, expected: type[BaseModel] | None = None) -> BaseModel:
    """Return the validated model; raise `EnvelopeError` naming the model and the first bad field.

    With `expected`, an envelope of another kind is refused before it is parsed.
    """
    model = MODELS.get(value.tag)
    if model is None:
        raise EnvelopeError(f"unknown envelope kind {value.tag!r}")
    if expected is not None and model is not expected:
        raise EnvelopeError(f"{model.__name__}, not a {expected.__name__}")
    try:
        return model.model_validate_json(value.data)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise EnvelopeError(f"malformed {model.__name__}: {location}: {first['msg']}") from None


def materialize(value: Any, build: Callable[[EnvelopeData], BaseModel] | None = None) -> Any:
    """Return `value` with every envelope in it made into its model by `build` (default: validated
    by `envelope`); raise `EnvelopeError`."""
    if isinstance(value, EnvelopeData):
        return envelope(value) if build is None else build(value)
    if isinstance(value, list):
        return [materialize(item, build) for item in value]
    if isinstance(value, dict):
        return {key: materialize(item, build) for key, item in value.items()}
    return value


def find_unpackable(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return (name, reason) for the first value in `values` that cannot cross, or None."""
    for name, value in values.items():
        try:
            msgpack.packb(value, default=pack_default, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            return name, str(exc)
    return None
