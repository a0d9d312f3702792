"""Guarded hook implementations: one plugin's exception is recorded against it, not raised to everyone.

pluggy calls an implementation with its arguments by position, in the order of
the implementation's own parameters. The guard is generated with exactly those
parameters (a `*args` shim costs 20-30% on a hook call; a generated one about
5%), and `functools.wraps` keeps what pluggy reads from the original: its
marker options and, through `__wrapped__`, its argument names.
"""

from __future__ import annotations

import functools
import inspect
import keyword
from collections.abc import Callable, Generator
from typing import Any

ErrorRecorder = Callable[[str, BaseException], None]

_RESERVED_PREFIX = "_aperio_"

# Exceptions that mean "stop the process" keep their meaning; everything else a
# plugin raises, SystemExit included, is that plugin's failure.
_CAUGHT = (Exception, SystemExit)


def positional_parameters(function: Callable[..., Any]) -> list[str] | None:
    """Return the parameter names pluggy passes, or None if a generated guard cannot mirror them."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    names = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.KEYWORD_ONLY):
            continue
        if parameter.default is not parameter.empty:
            continue  # pluggy never passes parameters that have defaults
        if keyword.iskeyword(parameter.name) or parameter.name.startswith(_RESERVED_PREFIX):
            return None
        names.append(parameter.name)
    return names


def _generated_guard(
    function: Callable[..., Any], names: list[str], hook_name: str, record: ErrorRecorder, propagate: bool
) -> Callable[..., Any]:
    params = ", ".join(names)
    handler = "raise" if propagate else "return None"
    source = (
        f"def _aperio_guard({params}):\n"
        f"    try:\n"
        f"        return _aperio_impl({params})\n"
        f"    except _aperio_caught as _aperio_exc:\n"
        f"        _aperio_record(_aperio_hook, _aperio_exc)\n"
        f"        {handler}\n"
    )
    namespace: dict[str, Any] = {
        "_aperio_impl": function,
        "_aperio_record": record,
        "_aperio_hook": hook_name,
        "_aperio_caught": _CAUGHT,
    }
    exec(compile(source, f"<aperio guard for {hook_name}>", "exec"), namespace)  # noqa: S102 - source is built from validated identifiers only
    guard: Callable[..., Any] = namespace["_aperio_guard"]
    return guard


def _generic_guard(
    function: Callable[..., Any], hook_name: str, record: ErrorRecorder, propagate: bool
) -> Callable[..., Any]:
    def guard(*args: Any) -> Any:
        try:
            return function(*args)
        except _CAUGHT as exc:
            record(hook_name, exc)
            if propagate:
                raise
            return None

    return guard


def _wrapper_guard(function: Callable[..., Any], hook_name: str, record: ErrorRecorder) -> Callable[..., Any]:
    # A wrapper is a generator that must yield exactly once, or pluggy treats
    # the whole hook call as failed. The guard yields once whatever the
    # plugin's generator does; a broken wrapper is bypassed and recorded.
    def guard(*args: Any) -> Generator[Any, Any, Any]:
        try:
            generator = function(*args)
            first = next(generator)
        except StopIteration:
            record(hook_name, RuntimeError("wrapper did not yield"))
            return (yield)
        except _CAUGHT as exc:
            record(hook_name, exc)
            return (yield)
        try:
            outcome = yield first
        except BaseException as downstream:
            try:
                generator.throw(downstream)
            except StopIteration as stop:
                return stop.value
            except BaseException as raised:
                if raised is not downstream and isinstance(raised, _CAUGHT):
                    record(hook_name, raised)
                    raise downstream from None
                raise
            record(hook_name, RuntimeError("wrapper yielded more than once"))
            generator.close()
            raise
        try:
            generator.send(outcome)
        except StopIteration as stop:
            return stop.value
        except _CAUGHT as exc:
            record(hook_name, exc)
            return outcome
        record(hook_name, RuntimeError("wrapper yielded more than once"))
        generator.close()
        return outcome

    return guard


def guard_implementation(
    function: Callable[..., Any],
    hook_name: str,
    record: ErrorRecorder,
    *,
    propagate: bool,
    is_wrapper: bool,
) -> Callable[..., Any]:
    """Return `function` wrapped so that its exceptions go to `record(hook_name, exc)`.

    With `propagate` the exception is recorded and re-raised. Wrappers
    (`wrapper=True`) get a generator guard that always yields once.
    """
    if is_wrapper:
        guard = _wrapper_guard(function, hook_name, record)
    else:
        names = positional_parameters(function)
        if names is None:
            guard = _generic_guard(function, hook_name, record, propagate)
        else:
            guard = _generated_guard(function, names, hook_name, record, propagate)
    return functools.wraps(function)(guard)
