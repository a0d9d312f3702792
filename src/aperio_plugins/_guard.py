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
import types
from collections.abc import Callable, Generator, Hashable
from typing import Any, Protocol

import msgspec

from ._breaker import Permit, incident_of
from .errors import PluginCallError, WorkerCrashedError, WorkerTimeoutError

ErrorRecorder = Callable[[str, BaseException], None]
Refuse = Callable[[str, Permit], BaseException]
"""Builds the error a propagating hook raises when the breaker refused the call (the permit says when to retry)."""
Convert = Callable[[str, BaseException], BaseException]
"""(hook name, what the implementation raised) -> the error a propagating hook raises for it."""

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


class Gate(Protocol):
    """What a guard asks before and tells after each call: a circuit breaker."""

    closed: bool

    def permit(self) -> Permit: ...
    def record_success(self, permit: Permit | None = None) -> None: ...
    def record_failure(self, permit: Permit | None = None, incident: Hashable | None = None) -> None: ...
    def release(self, permit: Permit) -> None: ...


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> types.CodeType:
    # Guards with the same parameters share their source; compiling it once
    # per host instead of once per hookimpl is most of what building guards costs.
    return compile(source, "<aperio guard>", "exec")


def _generated_guard(
    function: Callable[..., Any], names: list[str], hook_name: str, policy: _Policy
) -> Callable[..., Any]:
    params = ", ".join(names)
    if not policy.propagate:
        handler = "return None"
    elif policy.convert is None:
        handler = "raise"
    else:
        handler = "raise _aperio_convert(_aperio_hook, _aperio_exc)"
    # Two bodies with the same parameters and names. While the breaker is closed the guard runs the
    # first, a bare try/except: asking the breaker on every call cost 6 points of a 5-plugin hook call.
    # The breaker switches the guard to the second the moment it leaves closed (under its lock, before
    # any call can see it open), and back when it closes; the second sends every call through the
    # generic guard, which asks it for a permit.
    closed_source = (
        f"def _aperio_guard({params}):\n"
        f"    try:\n"
        f"        return _aperio_impl({params})\n"
        f"    except _aperio_caught as _aperio_exc:\n"
        f"        _aperio_fail(_aperio_hook, _aperio_exc, None)\n"
        f"        {handler}\n"
    )
    gated_source = f"def _aperio_guard({params}):\n    return _aperio_gated({params})\n"
    namespace: dict[str, Any] = {
        "_aperio_impl": function,
        "_aperio_fail": policy.fail,
        "_aperio_hook": hook_name,
        "_aperio_caught": _CAUGHT,
        "_aperio_convert": policy.convert,
        "_aperio_gated": _generic_guard(function, hook_name, policy),
    }
    # Each guard gets its own copy of the shared code object (`replace()` copies, it does not compile).
    # CPython specializes a code object's instructions in place for what they last saw: one code object
    # shared by every guard of a hook saw a different namespace and a different plugin function at each
    # implementation, kept missing its caches, and cost about 5 points of a 5-plugin hook call.
    exec(_compiled(closed_source), namespace)  # noqa: S102 - source is built from validated identifiers only
    closed_code = namespace["_aperio_guard"].__code__.replace()
    exec(_compiled(gated_source), namespace)  # noqa: S102 - source is built from validated identifiers only
    guard: Callable[..., Any] = namespace["_aperio_guard"]
    gated_code = guard.__code__.replace()
    guard.__code__ = gated_code
    watch = getattr(policy.gate, "watch_closed", None)
    if watch is None:
        return guard  # a gate that cannot say when it changes is asked on every call
    # Called now, and under the gate's lock at each change: no call sees the breaker's new state
    # before the guard has its new body.
    watch(lambda closed: setattr(guard, "__code__", closed_code if closed else gated_code))
    return guard


def _generic_guard(function: Callable[..., Any], hook_name: str, policy: _Policy) -> Callable[..., Any]:
    gate = policy.gate

    def guard(*args: Any) -> Any:
        permit = None if gate.closed else gate.permit()
        if permit is not None and not permit.granted:
            if policy.propagate:
                raise policy.refuse(hook_name, permit)
            return None
        try:
            result = function(*args)
        except _CAUGHT as exc:
            policy.fail(hook_name, exc, permit)
            if not policy.propagate:
                return None
            if policy.convert is None:
                raise
            raise policy.convert(hook_name, exc)  # noqa: B904 - the converted error sets its own cause
        except BaseException:
            if permit is not None:
                gate.release(permit)  # interrupted: no verdict on the plugin
            raise
        if permit is not None:
            gate.record_success(permit)  # closes the breaker if this call was its probe
        return result

    return guard


def _wrapper_guard(function: Callable[..., Any], hook_name: str, policy: _Policy) -> Callable[..., Any]:
    # A wrapper is a generator that must yield exactly once, or pluggy treats
    # the whole hook call as failed. The guard yields once whatever the
    # plugin's generator does; a broken wrapper is bypassed and recorded, and
    # a wrapper whose breaker is open is bypassed without being called.
    gate = policy.gate

    def guard(*args: Any) -> Generator[Any, Any, Any]:
        permit = None if gate.closed else gate.permit()
        if permit is not None and not permit.granted:
            return (yield)
        # A probe must end with a verdict whatever path the wrapper takes, or the breaker stays half-open.
        verdict: list[BaseException] = []

        def record(hook: str, exc: BaseException) -> None:
            verdict.append(exc)
            policy.fail(hook, exc, permit)

        try:
            return (yield from _run_wrapper(function, args, hook_name, record))
        finally:
            if permit is not None and not verdict:
                gate.record_success(permit)

    return guard


def _run_wrapper(
    function: Callable[..., Any], args: tuple[Any, ...], hook_name: str, record: ErrorRecorder
) -> Generator[Any, Any, Any]:
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


class _AlwaysClosed:
    closed = True

    def watch_closed(self, watcher: Callable[[bool], None]) -> None:
        watcher(True)  # never changes: the guard keeps its bare try/except

    def permit(self) -> Permit:  # pragma: no cover - never asked: `closed` is always true
        return Permit(granted=True)

    def record_success(self, permit: Permit | None = None) -> None:
        pass

    def record_failure(self, permit: Permit | None = None, incident: Hashable | None = None) -> None:
        pass

    def release(self, permit: Permit) -> None:  # pragma: no cover - never asked: no permit is handed out
        pass


class _Policy(msgspec.Struct, frozen=True):
    record: ErrorRecorder
    gate: Gate
    refuse: Refuse
    propagate: bool
    convert: Convert | None = None

    def fail(self, hook_name: str, exc: BaseException, permit: Permit | None) -> None:
        """Record the plugin's failure, then tell the breaker (once per incident, such as one worker crash)."""
        self.record(hook_name, exc)
        self.gate.record_failure(permit, incident_of(exc))


def _no_refusal(hook_name: str, permit: Permit) -> BaseException:  # pragma: no cover - never refuses
    raise AssertionError(hook_name)


def guard_implementation(
    function: Callable[..., Any],
    hook_name: str,
    record: ErrorRecorder,
    *,
    propagate: bool,
    is_wrapper: bool,
    gate: Gate | None = None,
    refuse: Refuse | None = None,
    convert: Convert | None = None,
) -> Callable[..., Any]:
    """Return `function` wrapped so that its exceptions go to `record(hook_name, exc)`.

    With `propagate` the exception is recorded and re-raised, as `convert(hook_name, exc)` makes it
    when given (`plugin_faults`: the same type wherever the plugin runs). Wrappers
    (`wrapper=True`) get a generator guard that always yields once. With a
    `gate` (a circuit breaker), a call it does not allow is skipped, or for a
    propagating hook fails fast with `refuse(hook_name, permit)`; every failure
    goes to `record` and then to the gate, every success to the gate.
    """
    policy = _Policy(record, gate or _AlwaysClosed(), refuse or _no_refusal, propagate, convert)
    if is_wrapper:
        guard = _wrapper_guard(function, hook_name, policy)
    else:
        names = positional_parameters(function)
        if names is None:
            guard = _generic_guard(function, hook_name, policy)
        else:
            guard = _generated_guard(function, names, hook_name, policy)
    return functools.wraps(function)(guard)


def plugin_faults(plugin_id: str, distribution: str | None = None) -> Convert:
    """The `convert` of one plugin's propagating hooks: what the plugin raised becomes a `PluginCallError`
    naming it, with the same fields whether it ran in this process (its exception is the `__cause__`) or in
    a worker (the worker's `PluginCallError` is). A worker's timeout or crash is no fault of the plugin's
    code, and passes as it is, as it does for `PluginHost.run`."""

    def convert(hook_name: str, exc: BaseException) -> BaseException:
        if isinstance(exc, (WorkerTimeoutError, WorkerCrashedError)):
            return exc
        error = PluginCallError.raised_by(plugin_id, f"hook {hook_name}", exc, distribution=distribution)
        error.__cause__ = exc
        return error

    return convert
