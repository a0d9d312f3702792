"""Hypothesis strategies and helpers shared by the fuzz tests of parsers of untrusted input."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEEP = [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 70 + b"]" * 70, b'{"a":' * 70 + b"1" + b"}" * 70]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)


def hostile(seed: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, random JSON, non-UTF-8, and the valid `seed` cut short or with one byte changed."""
    cut = st.integers(0, len(seed)).map(lambda end: seed[:end])
    flipped = st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)).map(
        lambda change: seed[: change[0]] + bytes([change[1]]) + seed[change[0] + 1 :]
    )
    as_json = JSON_VALUES.map(lambda value: json.dumps(value).encode())
    non_utf8 = st.binary(max_size=50).map(lambda data: b'{"x": "\xff\xfe' + data + b'"}')
    return st.one_of(st.binary(max_size=2000), as_json, non_utf8, cut, flipped, st.sampled_from(DEEP))


def only(errors: type[BaseException] | tuple[type[BaseException], ...], parse: Callable[[bytes], Any], data: bytes):
    """Run `parse(data)`; let through success or `errors` only."""
    with contextlib.suppress(errors):
        parse(data)


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4),
    max_leaves=20,
)
