"""Circuit breakers of in-process plugins: open after repeated failures, fail fast, probe, close."""

from __future__ import annotations

import time

import pytest
from plugin_builders import FINDING, connector_wheel

from aperio_hookspecs import SyncRequest
from aperio_plugins import CircuitOpenError, PluginCallError
from aperio_plugins.testing import PluginWheel

FLAKY = """
import pathlib
from aperio_hookspecs import Connector, SyncResult, hookimpl

CALLS = []
BROKEN = pathlib.Path({flag!r})

def _maybe_fail():
    CALLS.append(1)
    if BROKEN.exists():
        raise ConnectionError("provider down")

class Flaky(Connector):
    name = "flaky"
    provider = "test"

    def sync(self, context, request):
        _maybe_fail()
        return SyncResult(connector="flaky")

@hookimpl
def aperio_register_connectors(register):
    register(Flaky())

@hookimpl
def aperio_finding_raised(finding):
    _maybe_fail()
    return "acme.flaky"
"""


@pytest.fixture
def broken_flag(tmp_path):
    flag = tmp_path / "broken"
    flag.touch()
    return flag


@pytest.fixture
def host(make_host, install, wheel_dir, broken_flag):
    source = FLAKY.format(flag=str(broken_flag))
    install(
        PluginWheel("acme-flaky", plugins={"acme.flaky": "acme_flaky"}, files={"acme_flaky/__init__.py": source}).build(
            wheel_dir
        ),
        connector_wheel(wheel_dir, "acme.steady"),
    )
    host = make_host(settings={"plugin_breaker_failures": 3, "plugin_breaker_window": 60, "plugin_breaker_reset": 0.3})
    host.load()
    return host


def test_a_failing_plugin_is_skipped_once_its_breaker_opens_and_the_others_still_answer(host, audit):
    import acme_flaky

    for _ in range(6):
        assert host.hook.aperio_finding_raised(finding=FINDING) == ["acme.steady"]

    assert len(acme_flaky.CALLS) == 3  # three failures opened the breaker; the next three were not made
    info = host.get("acme.flaky")
    assert info.breaker_state == "open"
    assert info.call_failures == 3
    assert audit.names("acme.flaky").count("plugin.breaker.opened") == 1
    assert host.get("acme.steady").breaker_state == "closed"


def test_run_fails_fast_while_open_then_a_probe_closes_it(host, broken_flag, audit):
    import acme_flaky

    for _ in range(3):
        with pytest.raises(PluginCallError, match="provider down"):
            host.run("acme.flaky", SyncRequest(connector="flaky"))
    with pytest.raises(
        CircuitOpenError, match=r"circuit breaker is open after repeated failures \(next probe in 0\.\ds\)"
    ) as raised:
        host.run("acme.flaky", SyncRequest(connector="flaky"))
    assert 0 < raised.value.retry_in <= 0.3
    assert len(acme_flaky.CALLS) == 3

    broken_flag.unlink()  # the provider recovers
    time.sleep(0.35)
    assert host.run("acme.flaky", SyncRequest(connector="flaky")).connector == "flaky"
    assert host.get("acme.flaky").breaker_state == "closed"
    names = audit.names("acme.flaky")
    assert (
        names.index("plugin.breaker.opened")
        < names.index("plugin.breaker.half_open")
        < names.index("plugin.breaker.closed")
    )


def test_a_failed_probe_opens_the_breaker_again(host):
    import acme_flaky

    for _ in range(3):
        host.hook.aperio_finding_raised(finding=FINDING)
    time.sleep(0.35)
    host.hook.aperio_finding_raised(finding=FINDING)  # the probe, still failing
    assert host.get("acme.flaky").breaker_state == "open"
    host.hook.aperio_finding_raised(finding=FINDING)
    assert len(acme_flaky.CALLS) == 4


def test_a_propagating_hook_fails_fast_with_a_typed_error(make_host, install, wheel_dir):
    class ValidationSpecs:
        from aperio_hookspecs import hookspec, propagate_errors

        @propagate_errors
        @hookspec
        def acme_validate(self, value: str) -> None:
            """Refuse a value by raising."""

    source = (
        "from aperio_hookspecs import hookimpl\n@hookimpl\ndef acme_validate(value):\n    raise ValueError(value)\n"
    )
    install(
        PluginWheel("acme-val", plugins={"acme.val": "acme_val"}, files={"acme_val/__init__.py": source}).build(
            wheel_dir
        )
    )
    host = make_host(hookspecs=[ValidationSpecs], settings={"plugin_breaker_failures": 2})
    host.load()
    for _ in range(2):
        with pytest.raises(ValueError, match="x"):
            host.hook.acme_validate(value="x")
    with pytest.raises(CircuitOpenError, match="acme_validate not called"):
        host.hook.acme_validate(value="x")
