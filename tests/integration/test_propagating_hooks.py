"""A hook marked `propagate_errors` raises the same error type for the same plugin fault whether the
plugin runs in process or in a real worker process (`python -m aperio_plugins.worker`)."""

from __future__ import annotations

import pytest

from aperio_hookspecs import hookspec, propagate_errors
from aperio_plugins import Isolation, PluginCallError, PluginState
from aperio_plugins.testing import PluginWheel
from aperio_plugins.worker import WorkerSettings


class ValidationSpecs:
    @propagate_errors
    @hookspec
    def acme_validate(self, value: str) -> None:
        """Refuse a value by raising."""


# optionalhook: the worker's own manager knows only the plugin API's hookspecs, not the host application's.
SOURCE = """
from aperio_hookspecs import hookimpl

class RefusedValue(ValueError):
    pass

@hookimpl(optionalhook=True)
def acme_validate(value):
    if value == "ok":
        return None
    raise RefusedValue("refused: " + value)
"""


@pytest.fixture
def validating_host(make_host, install, wheel_dir):
    install(
        PluginWheel("acme-val", plugins={"acme.val": "acme_val"}, files={"acme_val/__init__.py": SOURCE}).build(
            wheel_dir
        )
    )

    def validating_host(isolation):
        host = make_host(
            hookspecs=[ValidationSpecs],
            settings={"plugin_isolation": isolation},
            worker_settings=WorkerSettings(restart_initial_delay=0.05, restart_max_delay=0.2),
        )
        host.load()
        info = host.get("acme.val")
        assert info.state is PluginState.ENABLED, info.error
        assert info.isolation is Isolation(isolation)
        return host

    return validating_host


def _fault(host):
    host.hook.acme_validate(value="ok")  # the plugin's accepted path raises nothing
    with pytest.raises(PluginCallError) as caught:
        host.hook.acme_validate(value="x")
    return caught.value


def test_the_same_fault_in_a_propagating_hook_has_the_same_type_wherever_the_plugin_runs(validating_host, audit):
    in_process = _fault(validating_host("inprocess"))
    in_worker = _fault(validating_host("process"))

    assert type(in_process) is type(in_worker) is PluginCallError
    fields = [
        (
            error.message,
            error.plugin_id,
            error.distribution,
            error.plugin_error_type,
            error.diagnostics(remote_traceback=False),
        )
        for error in (in_process, in_worker)
    ]
    assert fields[0] == fields[1]
    message, plugin_id, distribution, error_type, _ = fields[0]
    assert message == "plugin 'acme.val' failed in hook acme_validate: RefusedValue: refused: x"
    assert (plugin_id, error_type) == ("acme.val", "RefusedValue")
    assert str(distribution).startswith("acme_val 1.0.0")

    # In process the plugin's own exception is the cause; a worker adds the traceback it formatted.
    assert type(in_process.__cause__).__name__ == "RefusedValue"
    assert in_process.remote_traceback is None
    assert isinstance(in_worker.__cause__, PluginCallError)
    assert 'raise RefusedValue("refused: " + value)' in in_worker.diagnostics()

    # Recorded against the plugin in the same words, once per call, in both hosts.
    failed = [
        (row["plugin_id"], row["hook"], row["error_type"], row["error"])
        for row in audit.fields_of("plugin.call.failed")
    ]
    assert failed == [("acme.val", "acme_validate", "RefusedValue", "refused: x")] * 2


def test_an_unguarded_host_still_lets_the_plugins_own_exception_through(make_host, install, wheel_dir):
    install(
        PluginWheel("acme-val", plugins={"acme.val": "acme_val"}, files={"acme_val/__init__.py": SOURCE}).build(
            wheel_dir
        )
    )
    host = make_host(hookspecs=[ValidationSpecs], guard_calls=False)
    host.load()
    with pytest.raises(ValueError, match="refused: x") as caught:
        host.hook.acme_validate(value="x")
    assert not isinstance(caught.value, PluginCallError)
