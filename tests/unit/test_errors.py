"""The error tree: at most two levels below AperioError, and diagnostics that name what went wrong."""

from __future__ import annotations

import inspect

import pytest

from aperio_plugins import errors
from aperio_plugins.errors import AperioError, HookError, PluginCallError, WorkerCrashedError, WorkerError


def depth(cls: type) -> int:
    """The longest inheritance path from `cls` down to AperioError (0 for AperioError itself)."""
    if cls is AperioError:
        return 0
    return 1 + max(depth(base) for base in cls.__bases__ if issubclass(base, AperioError))


def test_every_error_is_at_most_two_levels_below_the_base():
    tree = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, AperioError)]
    assert len(tree) > 20
    assert {cls.__name__: depth(cls) for cls in tree if depth(cls) > 2} == {}


def test_a_worker_fault_is_still_a_failed_hook_call():
    crashed = WorkerCrashedError("worker of plugin 'acme.x' exited with status 7", plugin_id="acme.x", returncode=7)
    assert isinstance(crashed, WorkerError)
    assert isinstance(crashed, HookError)


def test_diagnostics_name_the_plugin_and_distribution_and_the_remote_traceback_on_request():
    error = PluginCallError(
        "plugin 'acme.x' failed: ValueError: bad",
        plugin_id="acme.x",
        remote_type="builtins.ValueError",
        remote_message="bad",
        remote_traceback='Traceback (most recent call last):\n  File "acme_x/__init__.py", line 3\nValueError: bad\n',
    )
    error.distribution = "acme-x 1.0.0"
    short = error.diagnostics(remote_traceback=False)
    assert short.splitlines() == [
        "plugin 'acme.x' failed: ValueError: bad",
        "plugin: acme.x",
        "distribution: acme-x 1.0.0",
    ]
    assert error.diagnostics().splitlines()[3:] == [
        "Traceback (most recent call last):",
        '  File "acme_x/__init__.py", line 3',
        "ValueError: bad",
    ]


def test_a_plugin_fault_has_one_type_in_process_and_in_a_worker():
    from aperio_plugins import worker

    assert errors.RemotePluginError is PluginCallError
    assert worker.RemotePluginError is worker.PluginCallError is PluginCallError
    with pytest.raises(PluginCallError) as caught:
        raise PluginCallError("plugin 'acme.x' failed: ValueError: bad", plugin_id="acme.x") from ValueError("bad")
    in_process = caught.value
    assert in_process.plugin_error_type == "ValueError"
    assert in_process.remote_traceback is None
    assert in_process.diagnostics() == in_process.diagnostics(remote_traceback=False)
    remote = PluginCallError("plugin 'acme.x' failed: ValueError: bad", remote_type="builtins.ValueError")
    assert remote.plugin_error_type == "ValueError"


@pytest.mark.parametrize(
    ("args", "count"),
    [
        (["plugin", "list", "-v"], 0),  # a subcommand's own option is not the group's
        (["-v", "plugin", "list"], 1),
        (["-vv", "plugin", "list"], 2),
        (["--verbose", "-v", "plugin"], 2),
        (["--version"], 0),
    ],
)
def test_the_cli_reads_its_verbosity_from_the_groups_options(args, count):
    # Imported here, not at collection: importing the CLI imports click into the test process, and
    # tests/integration/test_import_boundary.py needs a `click` the host has not imported yet.
    from aperio_plugins.cli._main import _verbosity

    assert _verbosity(args) == count
