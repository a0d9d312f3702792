"""Guards around hookimpls, tested with plain pluggy and inline plugin classes."""

from __future__ import annotations

import pluggy
import pytest

from aperio_plugins._breaker import BreakerPolicy, BreakerState, CircuitBreaker, Permit
from aperio_plugins._guard import guard_implementation, plugin_faults, positional_parameters
from aperio_plugins.errors import PluginCallError, WorkerCrashedError

spec = pluggy.HookspecMarker("t")
impl = pluggy.HookimplMarker("t")


class Specs:
    @spec
    def compute(self, x, y):
        """Broadcast."""

    @spec(firstresult=True)
    def first(self, x):
        """First non-None wins."""


def _manager(*plugins, propagate=False, gates=None, convert=None):
    errors = []
    manager = pluggy.PluginManager("t")
    manager.add_hookspecs(Specs)
    for index, plugin in enumerate(plugins):
        proxy = type("Proxy", (), {})()
        for name in dir(plugin):
            options = manager.parse_hookimpl_opts(plugin, name)
            if options is None:
                continue
            function = getattr(plugin, name)
            guarded = guard_implementation(
                function,
                name,
                lambda hook, exc, index=index: errors.append((index, hook, exc)),
                propagate=propagate,
                is_wrapper=bool(options.get("wrapper") or options.get("hookwrapper")),
                gate=(gates or {}).get(index),
                refuse=lambda hook, permit: RuntimeError(f"{hook} refused, retry in {permit.retry_in}"),
                convert=convert,
            )
            setattr(proxy, name, guarded)
        manager.register(proxy, name=f"p{index}")
    return manager, errors


class Adds:
    @impl
    def compute(self, x, y):
        return x + y


class Raises:
    @impl
    def compute(self, y):
        raise ValueError(f"bad {y}")

    @impl
    def first(self, x):
        raise KeyError(x)


class Exits:
    @impl
    def compute(self, x):
        raise SystemExit(2)


class Answers:
    @impl
    def first(self, x):
        return x * 10


def test_arguments_reach_the_implementation_by_name_and_failures_are_recorded():
    manager, errors = _manager(Adds(), Raises(), Exits())
    assert manager.hook.compute(x=1, y=2) == [3]
    recorded = {index: (hook, type(exc).__name__, str(exc)) for index, hook, exc in errors}
    assert recorded == {1: ("compute", "ValueError", "bad 2"), 2: ("compute", "SystemExit", "2")}


def test_firstresult_moves_on_past_a_failing_implementation():
    manager, errors = _manager(Answers(), Raises())
    assert manager.hook.first(x=4) == 40
    assert [hook for _, hook, _ in errors] == ["first"]


def test_propagating_guard_records_and_reraises():
    manager, errors = _manager(Raises(), propagate=True)
    with pytest.raises(ValueError, match="bad 2"):
        manager.hook.compute(x=1, y=2)
    assert len(errors) == 1


class AskedEveryCall:
    """A gate that cannot say when it changes: the guard asks it on every call (the generic guard)."""

    closed = False

    def permit(self):
        return Permit(granted=True)

    def record_success(self, permit=None):
        pass

    def record_failure(self, permit=None, incident=None):
        pass

    def release(self, permit):
        pass


@pytest.mark.parametrize("gate", [None, AskedEveryCall()], ids=["generated_guard", "generic_guard"])
def test_a_propagating_guard_raises_the_plugins_fault_as_a_plugin_call_error(gate):
    plugin = Raises()
    manager, errors = _manager(plugin, propagate=True, gates={0: gate}, convert=plugin_faults("acme.p", "acme-p 1.0"))
    with pytest.raises(PluginCallError) as raised:
        manager.hook.compute(x=1, y=2)
    assert raised.value.message == "plugin 'acme.p' failed in hook compute: ValueError: bad 2"
    assert (raised.value.plugin_id, raised.value.distribution) == ("acme.p", "acme-p 1.0")
    assert isinstance(raised.value.__cause__, ValueError)
    assert [type(exc) for _, _, exc in errors] == [ValueError]  # recorded as the plugin raised it


def test_a_workers_crash_is_not_turned_into_the_plugins_fault():
    crash = Switch(lambda: WorkerCrashedError("gone", returncode=-9, generation=1))
    manager, errors = _manager(crash, propagate=True, convert=plugin_faults("acme.p"))
    with pytest.raises(WorkerCrashedError, match="gone"):
        manager.hook.compute(x=1, y=2)
    assert len(errors) == 1


def test_keyboard_interrupt_is_not_swallowed():
    class Interrupts:
        @impl
        def compute(self, x):
            raise KeyboardInterrupt

    manager, _ = _manager(Interrupts())
    with pytest.raises(KeyboardInterrupt):
        manager.hook.compute(x=1, y=2)


class GoodWrapper:
    @impl(wrapper=True)
    def compute(self, x):
        result = yield
        return [*result, "wrapped"]


class WrapperFailsBeforeYield:
    @impl(wrapper=True)
    def compute(self, x):
        raise RuntimeError("setup failed")
        yield  # pragma: no cover


class WrapperFailsAfterYield:
    @impl(wrapper=True)
    def compute(self, x):
        yield
        raise RuntimeError("teardown failed")


class WrapperNeverYields:
    @impl(wrapper=True)
    def compute(self, x):
        return
        yield  # pragma: no cover


class WrapperYieldsTwice:
    @impl(wrapper=True)
    def compute(self, x):
        yield
        yield


@pytest.mark.parametrize(
    ("wrapper", "recorded"),
    [
        (WrapperFailsBeforeYield, "setup failed"),
        (WrapperFailsAfterYield, "teardown failed"),
        (WrapperNeverYields, "wrapper did not yield"),
        (WrapperYieldsTwice, "wrapper yielded more than once"),
    ],
)
def test_a_broken_wrapper_is_bypassed_and_the_result_survives(wrapper, recorded):
    manager, errors = _manager(Adds(), wrapper())
    assert manager.hook.compute(x=1, y=2) == [3]
    assert [str(exc) for _, _, exc in errors] == [recorded]


def test_a_working_wrapper_still_wraps():
    manager, errors = _manager(Adds(), GoodWrapper())
    assert manager.hook.compute(x=1, y=2) == [3, "wrapped"]
    assert errors == []


def test_a_wrapper_sees_and_may_handle_a_downstream_exception():
    class Handles:
        @impl(wrapper=True)
        def compute(self, x):
            try:
                yield
            except ValueError:
                return ["handled"]

    manager, _ = _manager(Raises(), Handles(), propagate=True)
    assert manager.hook.compute(x=1, y=2) == ["handled"]


def test_generated_guard_mirrors_only_parameters_pluggy_passes():
    def f(a, b, c=1, *args, d, **kw):
        pass

    assert positional_parameters(f) == ["a", "b"]
    assert positional_parameters(lambda _aperio_x: None) is None


# -- guards and the circuit breaker -----------------------------------------------------------


class Clock:
    now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def breaker(clock):
    return CircuitBreaker(BreakerPolicy(failure_threshold=2, window_seconds=60, reset_timeout_seconds=5), clock=clock)


class Switch:
    """Fails while `broken`, with whatever `error()` builds."""

    def __init__(self, error=lambda: ValueError("down")):
        self.broken = True
        self.error = error
        self.calls = 0

    @impl
    def compute(self, x):
        self.calls += 1
        if self.broken:
            raise self.error()
        return x


class SwitchWrapper:
    def __init__(self):
        self.broken = True

    @impl(wrapper=True)
    def compute(self, x):
        if self.broken:
            raise ValueError("setup failed")
        result = yield
        return [*result, "wrapped"]


def test_calls_broken_by_one_worker_crash_count_once(breaker):
    crash = Switch(lambda: WorkerCrashedError("gone", returncode=-9, generation=4))
    manager, errors = _manager(crash, gates={0: breaker})
    for _ in range(5):  # five calls in flight when generation 4 died
        assert manager.hook.compute(x=1, y=2) == []
    assert len(errors) == 5  # each is recorded against the plugin...
    assert breaker.closed  # ...and the breaker counts the crash once
    crash.error = lambda: WorkerCrashedError("gone again", returncode=-9, generation=5)
    manager.hook.compute(x=1, y=2)
    assert breaker.state is BreakerState.OPEN


def test_a_propagating_hook_refused_by_an_open_breaker_says_when_to_retry(breaker, clock):
    manager, _ = _manager(Switch(), propagate=True, gates={0: breaker})
    for _ in range(2):
        with pytest.raises(ValueError, match="down"):
            manager.hook.compute(x=1, y=2)
    clock.now += 1.5
    with pytest.raises(RuntimeError, match=r"compute refused, retry in 3\.5"):
        manager.hook.compute(x=1, y=2)


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_a_wrapper_probe_decides_the_breaker(breaker, clock, outcome):
    wrapper = SwitchWrapper()
    manager, _ = _manager(Adds(), wrapper, gates={1: breaker})
    for _ in range(2):
        assert manager.hook.compute(x=1, y=2) == [3]  # bypassed and recorded
    assert breaker.state is BreakerState.OPEN
    clock.now += 5
    wrapper.broken = outcome == "failure"
    expected = [3] if wrapper.broken else [3, "wrapped"]
    assert manager.hook.compute(x=1, y=2) == expected  # the probe
    assert breaker.state is (BreakerState.OPEN if wrapper.broken else BreakerState.CLOSED)


def test_an_interrupted_probe_lets_the_next_call_probe(breaker, clock):
    plugin = Switch()
    manager, _ = _manager(plugin, gates={0: breaker})
    for _ in range(2):
        manager.hook.compute(x=1, y=2)
    clock.now += 5
    plugin.error = KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        manager.hook.compute(x=1, y=2)  # the probe, interrupted: no verdict
    assert breaker.state is BreakerState.HALF_OPEN
    plugin.broken = False
    assert manager.hook.compute(x=1, y=2) == [1]  # the next call is the probe, and it succeeds
    assert breaker.closed


def test_a_breaker_opened_elsewhere_switches_the_guard_to_asking_it_before_each_call(breaker, clock):
    # The guard's closed-breaker body is a bare try/except; a breaker opened by failures the guard never
    # saw (run() records its own) must still make the guard skip the plugin, then let a probe through.
    calls: list[int] = []

    def compute(x):
        calls.append(x)
        return x

    guard = guard_implementation(
        compute, "compute", lambda hook, exc: None, propagate=False, is_wrapper=False, gate=breaker
    )
    assert guard(1) == 1
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert guard(2) is None
    assert calls == [1]  # skipped while open
    clock.now += 6
    assert guard(3) == 3  # the half-open probe goes through and closes the breaker
    assert breaker.state is BreakerState.CLOSED
    assert guard(4) == 4
    assert calls == [1, 3, 4]


def test_guards_of_the_same_shape_do_not_share_code_objects_in_any_breaker_state(clock):
    # CPython specializes a code object's instructions in place for what they last saw; guards sharing one
    # (same parameters, same hook) each see another plugin function and namespace, and keep missing.
    breakers = [
        CircuitBreaker(BreakerPolicy(failure_threshold=1, window_seconds=60, reset_timeout_seconds=5), clock=clock)
        for _ in range(3)
    ]
    results = []

    def make(n):
        def compute(x):
            results.append((n, x))
            return n

        return compute

    guards = [
        guard_implementation(make(n), "compute", lambda hook, exc: None, propagate=False, is_wrapper=False, gate=b)
        for n, b in enumerate(breakers)
    ]
    assert len({id(guard.__code__) for guard in guards}) == 3
    breakers[0].record_failure()  # open: that guard switches to its gated body
    assert breakers[0].state is BreakerState.OPEN
    assert len({id(guard.__code__) for guard in guards}) == 3
    assert [guard(7) for guard in guards] == [None, 1, 2]  # the open one is skipped, the others still run
    clock.now += 6
    assert guards[0](8) == 0  # the probe closes it again
    assert breakers[0].state is BreakerState.CLOSED
    assert len({id(guard.__code__) for guard in guards}) == 3
    assert results == [(1, 7), (2, 7), (0, 8)]
