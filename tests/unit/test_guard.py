"""Guards around hookimpls, tested with plain pluggy and inline plugin classes."""

from __future__ import annotations

import pluggy
import pytest

from aperio_plugins._guard import guard_implementation, positional_parameters

spec = pluggy.HookspecMarker("t")
impl = pluggy.HookimplMarker("t")


class Specs:
    @spec
    def compute(self, x, y):
        """Broadcast."""

    @spec(firstresult=True)
    def first(self, x):
        """First non-None wins."""


def _manager(*plugins, propagate=False):
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
