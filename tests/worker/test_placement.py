"""CPU placement hints: a worker found on another CPU than its caller is brought beside it for one
call, and its own CPU mask is always put back. Real worker processes, real affinity calls."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_processes import start_time

from aperio_hookspecs import Finding, Resource
from aperio_plugins.worker import _placement
from aperio_plugins.worker._placement import Placement, last_cpu

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="placement hints need Linux and at least two CPUs to choose from",
)

WHERE_ID = "acme.where"
# A hook that says where it ran: the CPU, the CPUs it was allowed, and which process it is.
WHERE_SOURCE = """
import os
from aperio_hookspecs import hookimpl

_WHO = open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()[19].decode()

@hookimpl
def aperio_finding_raised(finding):
    cpu = int(open("/proc/thread-self/stat", "rb").read().rsplit(b")", 1)[1].split()[36])
    return {"cpu": cpu, "allowed": sorted(os.sched_getaffinity(0)), "who": _WHO}
"""
FINDING = Finding(
    id="f-1",
    provider="test",
    title="where",
    severity="low",
    resource=Resource(type="file", id="9"),
    detected_at=datetime.datetime(2026, 11, 22, 10, 0, tzinfo=datetime.timezone.utc),
)
HERE = "/proc/thread-self/stat"


@pytest.fixture
def own_mask() -> Iterator[set[int]]:
    """This thread's CPU mask, put back after the test whatever it did."""
    mask = os.sched_getaffinity(0)
    yield mask
    os.sched_setaffinity(0, mask)


def _process(plugin: Any) -> Any:
    # The host-side process object behind the stand-in: its placement is what is tested here.
    return plugin._aperio_lifecycle.acquire(time.monotonic() + 10)


def _where(plugin: Any) -> dict[str, Any]:
    answers = plugin.aperio_finding_raised(finding=FINDING)
    return answers  # type: ignore[no-any-return]


def _apart(plugin: Any, interpreter: int, mask: set[int]) -> int:
    """Leave the (sleeping) worker last run on a CPU other than this thread's; return this thread's CPU."""
    here = last_cpu(HERE)
    other = min(mask - {here})
    os.sched_setaffinity(interpreter, {other})
    assert _where(plugin)["cpu"] == other
    os.sched_setaffinity(interpreter, mask)
    return here


def test_the_hint_finds_the_interpreter_inside_or_outside_the_sandbox(start_worker):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)

    interpreter = process._interpreter_pid()

    assert interpreter is not None
    assert start_time(interpreter) == _where(plugin)["who"]


def test_a_worker_on_another_cpu_is_brought_beside_its_caller_for_one_call_and_then_left_free(start_worker, own_mask):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()
    worker_mask = os.sched_getaffinity(interpreter)
    for _attempt in range(5):  # this thread may be moved between two lines on a busy machine: try again
        here = _apart(plugin, interpreter, own_mask)
        pending = process.placement._look()
        if pending == last_cpu(HERE):
            break
    assert pending == here
    process.placement._pending = pending

    hinted = _where(plugin)

    assert process.placement.hints == 1
    assert hinted["allowed"] == [here]  # restricted while it was woken for the call
    assert hinted["cpu"] == here
    assert os.sched_getaffinity(interpreter) == worker_mask  # and its own mask put back at once
    assert _where(plugin)["allowed"] == sorted(worker_mask)


def test_calls_made_every_so_often_look_and_hint_by_themselves(start_worker, own_mask):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()
    for _attempt in range(5):
        _apart(plugin, interpreter, own_mask)
        process.placement._countdown = 1  # the next call is the one that looks
        _where(plugin)
        if process.placement._pending is not None:
            break
    assert process.placement._pending is not None
    target = process.placement._pending

    answer = _where(plugin)

    assert process.placement.hints == 1
    assert answer["allowed"] == [target]
    assert os.sched_getaffinity(interpreter) == own_mask


def test_a_pinned_caller_gives_no_hint(start_worker, own_mask):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()
    _apart(plugin, interpreter, own_mask)
    os.sched_setaffinity(0, {last_cpu(HERE)})

    looked = process.placement._look()
    for _ in range(2 * _placement.CHECK_EVERY):
        answer = _where(plugin)

    assert looked is None
    assert process.placement.hints == 0
    assert answer["allowed"] == sorted(own_mask)


def test_a_worker_that_may_not_run_on_the_callers_cpu_is_left_where_it_is(start_worker, own_mask):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()
    here = last_cpu(HERE)
    elsewhere = {min(own_mask - {here})}
    os.sched_setaffinity(interpreter, elsewhere)  # an operator confined the worker
    process.placement._pending = here

    answer = _where(plugin)

    assert process.placement.hints == 0
    assert answer["allowed"] == sorted(elsewhere)
    assert os.sched_getaffinity(interpreter) == elsewhere


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield child
    child.kill()
    child.wait()


def _sleeping_elsewhere(pid: int, mask: set[int]) -> None:
    """Wait until `pid` sleeps, last run on a CPU other than this thread's."""
    os.sched_setaffinity(pid, {min(mask - {last_cpu(HERE)})})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        if state == b"S" and last_cpu(f"/proc/{pid}/stat") != last_cpu(HERE):
            return
        time.sleep(0.01)
    raise AssertionError("the child never slept on another CPU")


def test_long_calls_and_calls_among_others_do_not_look(sleeper, own_mask):
    placement = Placement(lambda: sleeper.pid, every=1)
    _sleeping_elsewhere(sleeper.pid, own_mask)

    assert placement.due()
    placement.after(False, _placement.SHORT_CALL * 2, alone=True)  # a long call: its wake-ups do not matter
    assert placement._pending is None
    assert placement.due()
    placement.after(False, 0.0001, alone=False)  # other calls in flight: no one CPU to be beside
    assert placement._pending is None
    for _attempt in range(5):  # this thread may be moved between two lines on a busy machine: try again
        _sleeping_elsewhere(sleeper.pid, own_mask)
        assert placement.due()
        placement.after(False, 0.0001, alone=True)
        if placement._pending is not None:
            break
    assert placement._pending is not None


def test_a_worker_gone_before_its_hint_is_given_no_hint_and_nothing_is_left_held(sleeper):
    placement = Placement(lambda: sleeper.pid, every=1)
    placement._pid, placement._resolved, placement._pending = sleeper.pid, True, 0
    sleeper.kill()
    sleeper.wait()

    assert placement.before() is False
    assert placement.hints == 0
    assert placement._lock.acquire(blocking=False)  # not left held by the refused hint
