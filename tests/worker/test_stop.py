"""`stop()` under the default sandbox, many times over: when it returns, the worker's exit is recorded.

A worker's exit is recorded by its watcher thread just after the process is
reaped; `stop()` used to return in between, so that the `plugin.worker.exited`
event was sometimes missing right after it. Each scenario runs 20 times: the
race it guards against showed up about once in ten.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from worker_processes import ended, gone, tree

from aperio_hookspecs import SyncRequest
from aperio_plugins.worker import WorkerPlugin, WorkerState
from worker.helpers import connector_of, sync

ROUNDS = 20
EXPECTED = "bwrap" if shutil.which("bwrap") else "subreaper"  # APERIO_PLUGIN_SANDBOX=auto, the default


def assert_stopped_cleanly(plugin: WorkerPlugin, audit, pid: int, processes, directory: str, returncode) -> None:
    """Everything `stop()` promises, checked the moment it returns: nothing here waits."""
    exited = [fields for fields in audit.fields_of("plugin.worker.exited") if fields["pid"] == pid]
    assert len(exited) == 1, f"{len(exited)} exit events for pid {pid} right after stop()"
    if returncode is not None:
        assert exited[0]["returncode"] == returncode
    status = plugin.status()
    assert (status.state, status.pid) == (WorkerState.STOPPED, None)
    # bwrap, the sandbox's pid 1 and the interpreter (or the interpreter alone): the host's child reaped,
    # the rest dead (see `ended` for the one zombie that is init's, not the host's).
    assert ended(processes), [p for p in processes if not gone(p)]
    assert not os.path.exists(directory)


def test_stop_of_an_idle_worker_records_its_exit_before_it_returns(start_worker, make_context, audit):
    for _ in range(ROUNDS):
        plugin = start_worker()
        pid = plugin.status().pid
        assert plugin.status().containment == EXPECTED
        processes = tree(pid)
        assert len(processes) == (3 if EXPECTED == "bwrap" else 1)
        directory = sync(plugin, make_context(), mode="cwd").next_cursor

        plugin.stop(timeout=5.0)

        assert_stopped_cleanly(plugin, audit, pid, processes, directory, 0)


def test_stop_with_a_call_in_flight_lets_it_finish_and_records_the_exit(start_worker, make_context, audit):
    for _ in range(ROUNDS):
        plugin = start_worker()
        pid = plugin.status().pid
        processes = tree(pid)
        directory = sync(plugin, make_context(), mode="cwd").next_cursor
        connector = connector_of(plugin)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                connector.sync, make_context(), SyncRequest(connector="probe", config={"mode": "sleep", "seconds": 0.2})
            )
            time.sleep(0.05)
            plugin.stop(timeout=5.0)
            assert_stopped_cleanly(plugin, audit, pid, processes, directory, 0)
            assert pending.result().next_cursor == "late"


def test_stop_right_after_a_restart_leaves_no_worker_and_records_every_exit(start_worker, make_context, audit):
    """The operator's restart kills the worker and a new one is launched in the background; a stop at
    any moment of that must end the new one too, not leave it running after `stop()` returned."""
    for round_ in range(ROUNDS):
        plugin = start_worker()
        first = plugin.status().pid
        processes = tree(first)
        plugin.restart()
        time.sleep(0.02 * (round_ % 5))  # stop at different moments of the kill, the backoff and the launch

        plugin.stop(timeout=1.0)

        started = {fields["pid"] for fields in audit.fields_of("plugin.worker.restarted")}
        exited = {fields["pid"] for fields in audit.fields_of("plugin.worker.exited")}
        assert first in exited
        assert started <= exited, f"workers launched but with no exit recorded: {started - exited}"
        assert plugin.status().pid is None
        assert ended(processes)
        assert not [pid for pid in started if os.path.exists(f"/proc/{pid}")]  # each new worker reaped too


@pytest.mark.parametrize("scenario", ["idle", "in flight"])
def test_stop_is_idempotent_and_a_second_stop_sees_the_same_record(scenario, start_worker, make_context, audit):
    plugin = start_worker()
    pid = plugin.status().pid
    if scenario == "in flight":
        connector = connector_of(plugin)
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(
                connector.sync, make_context(), SyncRequest(connector="probe", config={"mode": "sleep", "seconds": 0.2})
            )
            time.sleep(0.05)
            with ThreadPoolExecutor(2) as stoppers:
                list(stoppers.map(lambda _: plugin.stop(timeout=5.0), range(2)))
            assert pending.result().next_cursor == "late"
    else:
        plugin.stop(timeout=5.0)
        plugin.stop(timeout=5.0)
    assert [fields["pid"] for fields in audit.fields_of("plugin.worker.exited")] == [pid]
    assert plugin.status().state is WorkerState.STOPPED
