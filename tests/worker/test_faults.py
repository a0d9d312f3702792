"""Fault injection: a real worker process misbehaves in each case; the host, and the next call, are fine."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from worker_processes import interpreter, tree, worker_processes

from aperio_hookspecs import SyncRequest
from aperio_plugins.worker import (
    HandshakeError,
    PluginCallError,
    WorkerCrashedError,
    WorkerSettings,
    WorkerState,
    WorkerTimeoutError,
)
from worker.helpers import (
    PROBE_ID,
    alive,
    connector_of,
    peak_rss_kib,
    reset_peak_rss,
    sync,
    token,
    worker_pids,
)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_worker_hang_times_out_then_the_worker_is_killed_and_replaced(start_worker, make_context, audit):
    plugin = start_worker()
    pid = plugin.status().pid
    worker = tree(pid)  # bwrap's two processes and the interpreter under the sandbox, or the interpreter alone
    first = token(pid)
    started = time.monotonic()

    with pytest.raises(
        WorkerTimeoutError, match="connector 'probe' did not answer before its deadline; the call was cancelled"
    ):
        sync(plugin, make_context(timeout=0.5), mode="hang")
    timed_out_after = time.monotonic() - started
    after = sync(plugin, make_context(timeout=30))

    assert timed_out_after < 1.5
    assert after.next_cursor not in (first, None)  # a new worker answered
    assert after.next_cursor == token(plugin.status().pid)
    assert not any(alive(process) for process in worker)
    (killed,) = audit.fields_of("plugin.worker.killed")
    assert killed["pid"] == pid
    assert killed["reason"].startswith("it did not answer the cancel of call")
    assert audit.fields_of("plugin.worker.timeout")[0]["call"] == "connector 'probe'"
    exited = [fields for fields in audit.fields_of("plugin.worker.exited") if fields["pid"] == pid]
    assert exited[0]["status"] == "was killed by signal SIGKILL (9)"
    assert audit.fields_of("plugin.worker.restarted")[0]["attempt"] == 1
    assert plugin.status().restarts == 1


def test_worker_sleeping_past_the_deadline_answers_late_and_the_late_answer_is_discarded(
    start_worker, make_context, audit
):
    plugin = start_worker(options=WorkerSettings(grace_period=5.0))
    pid = plugin.status().pid

    with pytest.raises(WorkerTimeoutError):
        sync(plugin, make_context(timeout=0.3), mode="sleep", seconds=1.0)
    started = time.monotonic()
    after = sync(plugin, make_context(timeout=10), mode="echo", value="second call")

    assert after.next_cursor == "second call"  # its own answer, not the late "late"
    assert time.monotonic() - started < 3.0  # it waited for the late answer, not for the grace period
    assert plugin.status().pid == pid  # the worker recovered: not killed
    assert "plugin.worker.killed" not in audit.names()


def test_worker_exit_mid_call_is_a_crash_error_naming_the_status_and_the_worker_restarts(
    start_worker, make_context, audit
):
    failures = []
    plugin = start_worker(on_failure=lambda plugin_id, error: failures.append((plugin_id, error)))
    pid = plugin.status().pid
    first = token(pid)

    with pytest.raises(
        WorkerCrashedError, match=rf"worker of plugin 'acme.probe' \(pid {pid}\) exited with status 3"
    ) as caught:
        sync(plugin, make_context(), mode="exit", status=3)
    after = sync(plugin, make_context(timeout=30))

    assert caught.value.returncode == 3
    assert after.next_cursor not in ("", first)
    assert after.next_cursor == token(plugin.status().pid)
    assert [(plugin_id, type(error).__name__) for plugin_id, error in failures] == [(PROBE_ID, "WorkerCrashedError")]
    assert "plugin.worker.restarted" in audit.names()


def test_worker_segfault_is_a_crash_error_naming_the_signal(start_worker, make_context):
    plugin = start_worker()

    with pytest.raises(WorkerCrashedError, match=r"was killed by signal SIGSEGV \(11\)") as caught:
        sync(plugin, make_context(), mode="segv")

    assert caught.value.returncode == -signal.SIGSEGV
    assert sync(plugin, make_context(timeout=30)).next_cursor


def test_worker_unbounded_allocation_meets_the_memory_limit_not_the_host(start_worker, make_context):
    plugin = start_worker(options=WorkerSettings(memory_limit=384 * 1024 * 1024, restart_initial_delay=0.05))
    reset_peak_rss()
    host_peak_before = peak_rss_kib()

    with pytest.raises((PluginCallError, WorkerCrashedError)) as caught:
        sync(plugin, make_context(timeout=30), mode="memory")

    if isinstance(caught.value, PluginCallError):
        assert caught.value.remote_type == "MemoryError"
    assert sync(plugin, make_context(timeout=30)).next_cursor
    assert peak_rss_kib() - host_peak_before < 50 * 1024


def test_worker_50_mb_of_stderr_costs_the_host_bounded_memory_time_and_events(start_worker, make_context, audit):
    options = WorkerSettings(stderr_line_limit=1000, stderr_bytes_per_second=64 * 1024, stderr_burst_bytes=256 * 1024)
    plugin = start_worker(options=options)
    pid = plugin.status().pid
    measured = reset_peak_rss()
    host_peak_before = peak_rss_kib()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()

    result = sync(plugin, make_context(timeout=60), mode="stderr", long_mb=5, short_mb=45)
    short_lines = 45 * 16 * 655

    def flood() -> list[dict]:
        lines = [fields for fields in audit.fields_of("plugin.worker.stderr") if fields["pid"] == pid]
        return [fields for fields in lines if fields["line"].startswith(("x", "y"))]

    def dropped() -> int:
        return sum(
            fields["lines"] for fields in audit.fields_of("plugin.worker.stderr.dropped") if fields["pid"] == pid
        )

    # Every line is accounted for: logged, or counted in a drop report.
    assert wait_for(lambda: dropped() + len(flood()) - 1 == short_lines)
    elapsed = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)

    assert result.next_cursor == token(pid)
    logged = sum(len(fields["line"]) + 1 for fields in flood())
    assert logged <= options.stderr_burst_bytes + options.stderr_bytes_per_second * (elapsed + 1) + 1000
    assert all(len(fields["line"]) <= 1000 for fields in audit.fields_of("plugin.worker.stderr"))
    (long_line,) = [fields for fields in flood() if fields["line"].startswith("y")]
    assert long_line["truncated_bytes"] == 5 * (1 << 20) - 1000
    assert elapsed < 30
    assert (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime) < 10
    if measured:
        assert peak_rss_kib() - host_peak_before < 40 * 1024


def test_worker_garbage_on_the_protocol_channel_fails_that_worker_not_the_host(start_worker, make_context, audit):
    plugin = start_worker()
    other = start_worker()
    pid = plugin.status().pid
    first = token(pid)

    with pytest.raises(
        WorkerCrashedError, match=r"the host killed it: it broke the protocol: frame of 3735928559 bytes"
    ):
        sync(plugin, make_context(), mode="garbage")

    assert sync(other, make_context()).next_cursor == token(other.status().pid)
    assert sync(plugin, make_context(timeout=30)).next_cursor not in (first, None)
    assert any(fields["pid"] == pid for fields in audit.fields_of("plugin.worker.killed"))


# From outside, "the worker" is either the process the host reports (bwrap's, under the sandbox) or the
# interpreter inside: SIGKILLed, bwrap's pid 1 exits with 128+9, which the host must report as the signal.
@pytest.mark.parametrize("target", ["reported", "interpreter"])
def test_worker_killed_from_outside_while_the_host_writes_to_it_is_not_said_to_be_killed_by_the_host(
    target, start_worker, make_context, audit
):
    plugin = start_worker()
    pid = plugin.status().pid
    victim = pid if target == "reported" else interpreter(pid)[0]
    sync(plugin, make_context(), mode="freeze")  # it stops itself: the host's write of a large request blocks
    time.sleep(0.4)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sync, plugin, make_context(timeout=30), mode="echo", value="x" * (1 << 20))
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)  # from outside; the host sees a broken pipe before it reaps the worker
        with pytest.raises(WorkerCrashedError) as caught:
            pending.result()

    assert caught.value.message == f"worker of plugin 'acme.probe' (pid {pid}) was killed by signal SIGKILL (9)"
    assert caught.value.returncode == -signal.SIGKILL
    assert caught.value.generation == 1
    assert not any(fields["pid"] == pid for fields in audit.fields_of("plugin.worker.killed"))
    after = sync(plugin, make_context(timeout=30), mode="echo", value="next")
    assert after.next_cursor == "next"


def test_worker_killed_by_the_host_says_so_and_why(start_worker, make_context):
    plugin = start_worker()
    pid = plugin.status().pid
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sync, plugin, make_context(timeout=30), mode="sleep", seconds=10)
        time.sleep(0.3)
        plugin.restart()  # the operator's restart kills the worker with the call in flight
        with pytest.raises(WorkerCrashedError) as caught:
            pending.result()

    assert caught.value.message == (
        f"worker of plugin 'acme.probe' (pid {pid}) was killed by signal SIGKILL (9)"
        " (the host killed it: the operator asked for a restart)"
    )


def test_worker_that_never_completes_its_handshake_is_killed_after_the_start_timeout(start_worker, audit):
    started = time.monotonic()

    with pytest.raises(HandshakeError, match=r"no handshake line within the start timeout of 4 s"):
        start_worker("acme.silent", source="import time\ntime.sleep(3600)\n", options=WorkerSettings(start_timeout=4.0))

    assert 4.0 <= time.monotonic() - started < 10.0
    (failed,) = audit.fields_of("plugin.worker.handshake.failed")
    assert failed["plugin_id"] == "acme.silent"
    assert "plugin.worker.killed" in audit.names("acme.silent")
    assert wait_for(lambda: not worker_processes("--plugin-id acme.silent "))


SPEAKS_99 = """
import aperio_plugins.worker._protocol as _protocol
_protocol.PROTOCOL_VERSIONS = (99,)
"""


def test_worker_that_speaks_only_protocol_99_is_refused_naming_both_versions(start_worker, audit):
    with pytest.raises(HandshakeError, match=r"it speaks protocol versions 99; this host speaks 1"):
        start_worker("acme.future", source=SPEAKS_99)

    assert len(audit.fields_of("plugin.worker.handshake.failed")) == 1
    assert wait_for(lambda: not worker_processes("--plugin-id acme.future "))


def test_worker_that_stops_answering_heartbeats_is_killed_and_replaced(start_worker, make_context, audit):
    plugin = start_worker(options=WorkerSettings(heartbeat_interval=0.3, grace_period=0.5, restart_initial_delay=0.05))
    pid = plugin.status().pid
    first = token(pid)

    sync(plugin, make_context(), mode="freeze")  # the worker SIGSTOPs itself just after answering

    assert wait_for(lambda: any(f["pid"] == pid for f in audit.fields_of("plugin.worker.killed")))
    (killed,) = audit.fields_of("plugin.worker.killed")
    assert killed["reason"] == "it did not answer a heartbeat within 0.5 s"
    assert sync(plugin, make_context(timeout=30)).next_cursor not in (first, None)


def test_hundred_consecutive_crashes_back_off_then_give_up_with_the_host_cpu_low(start_worker, make_context, audit):
    options = WorkerSettings(
        restart_initial_delay=0.05,
        restart_multiplier=2.0,
        restart_max_delay=2.0,
        restart_max_attempts=5,
        grace_period=1.0,
    )
    failures = []
    plugin = start_worker(options=options, on_failure=lambda plugin_id, error: failures.append(error))
    before = resource.getrusage(resource.RUSAGE_SELF)

    errors = []
    for _ in range(100):
        with pytest.raises(WorkerCrashedError) as caught:
            sync(plugin, make_context(timeout=30), mode="exit", status=7)
        errors.append(caught.value.message)
    after = resource.getrusage(resource.RUSAGE_SELF)

    restarts = audit.fields_of("plugin.worker.restarted")
    assert [fields["attempt"] for fields in restarts] == [1, 2, 3, 4, 5]
    assert [fields["backoff_cap"] for fields in restarts] == [0.05, 0.1, 0.2, 0.4, 0.8]  # the backoff grows
    assert all(0 <= fields["delay"] <= fields["backoff_cap"] for fields in restarts)
    assert [message.startswith("worker of plugin") for message in errors] == [True] * 6 + [False] * 94
    assert all("exited with status 7" in message for message in errors)
    assert all("is down after 6 consecutive failures" in message for message in errors[6:])
    assert len(failures) == 6
    assert plugin.status().state is WorkerState.FAILED
    assert "plugin.worker.gave_up" in audit.names()
    assert (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime) < 5.0

    plugin.restart()  # the operator's way back: a fresh worker, failures forgotten
    assert wait_for(lambda: plugin.status().state is WorkerState.READY, timeout=30)
    assert sync(plugin, make_context()).next_cursor == token(plugin.status().pid)


def test_concurrent_calls_from_many_threads_get_their_own_answers(start_worker, make_context):
    plugin = start_worker()
    connector = connector_of(plugin)

    def calls(thread: int) -> list[str]:
        return [
            connector.sync(
                make_context(), SyncRequest(connector="probe", config={"mode": "echo", "value": f"{thread}-{n}"})
            ).next_cursor
            for n in range(25)
        ]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(calls, range(8)))

    assert answers == [[f"{thread}-{n}" for n in range(25)] for thread in range(8)]


def test_stop_lets_a_call_in_flight_finish(start_worker, make_context, audit):
    plugin = start_worker()
    pid = plugin.status().pid
    connector = connector_of(plugin)

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            connector.sync, make_context(), SyncRequest(connector="probe", config={"mode": "sleep", "seconds": 0.5})
        )
        time.sleep(0.2)
        plugin.stop(timeout=5.0)
        assert pending.result().next_cursor == "late"

    exited = [fields for fields in audit.fields_of("plugin.worker.exited") if fields["pid"] == pid]
    assert exited[0]["returncode"] == 0


def test_stop_terminates_a_worker_whose_call_does_not_finish(start_worker, make_context):
    plugin = start_worker()
    connector = connector_of(plugin)

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            connector.sync, make_context(timeout=60), SyncRequest(connector="probe", config={"mode": "hang"})
        )
        time.sleep(0.2)
        started = time.monotonic()
        plugin.stop(timeout=0.3)
        with pytest.raises(WorkerCrashedError, match=r"was killed by signal SIGTERM \(15\) \(the host stopped it\)"):
            pending.result()

    assert time.monotonic() - started < 3.0


HOST_SCRIPT = """
import sys, threading, time
from pathlib import Path
from aperio_hookspecs import SyncRequest
from aperio_hookspecs.testing import make_context
from aperio_plugins import HostSettings, TrustMode
from aperio_plugins.worker import WorkerPlugin

plugins, state, ending = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
settings = HostSettings(
    plugins_dir=plugins, state_dir=state / "state", plugin_trusted_keys_dir=state / "keys",
    plugin_trusted_identities=state / "ids.toml", plugin_trust_mode=TrustMode.WARN,
)
workers = [WorkerPlugin.start("acme.probe", settings=settings, search_path=[]) for _ in range(2)]
registered = []
workers[0].aperio_register_connectors(registered.append)
busy = SyncRequest(connector="probe", config={"mode": "hang"})
threading.Thread(target=registered[0].sync, args=(make_context("acme.probe", timeout=600), busy), daemon=True).start()
print(" ".join(str(worker.status().pid) for worker in workers), flush=True)
sys.stdin.readline()
if ending == "raise":
    raise RuntimeError("the host application crashed")
sys.exit(0)
"""


@pytest.mark.parametrize("ending", ["sigkill", "exit", "raise"])
def test_no_worker_outlives_its_host(ending, probe_plugins_dir, tmp_path):
    host = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOST_SCRIPT), str(probe_plugins_dir), str(tmp_path), ending],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        pids = [int(pid) for pid in host.stdout.readline().split()]
        assert len(pids) == 2
        assert sorted(worker_pids(f"--parent-pid {host.pid} ")) == sorted(pids)
        workers = [process for pid in pids for process in tree(pid)]  # and, under bwrap, what runs inside
        time.sleep(0.3)  # let the hanging call reach its worker
        if ending == "sigkill":
            host.kill()
        else:
            host.stdin.write("\n")
            host.stdin.flush()
        host.wait(timeout=30)

        # A dying process's cmdline empties before its state leaves "running": wait for both signs.
        assert wait_for(lambda: not worker_processes(f"--parent-pid {host.pid} "), timeout=10)
        assert wait_for(lambda: not any(alive(worker) for worker in workers), timeout=10)
    finally:
        host.kill()
        host.wait()
