"""CPU placement hints: a worker found on another CPU than its caller is brought beside it for one
call, and its own CPU mask is always put back. Real worker processes, real affinity calls."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from worker_processes import start_time

from aperio_hookspecs import Finding, Resource
from aperio_plugins.worker.supervise import _placement
from aperio_plugins.worker.supervise._placement import Placement, last_cpu

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


@pytest.fixture(autouse=True)
def no_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hints are given only where nothing spins (with spinning on, host and worker apart answer sooner)."""
    monkeypatch.setenv("APERIO_WORKER_SPIN_US", "0")


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
    """Leave the (sleeping) worker last run on a CPU other than this thread's; return that CPU."""
    other = min(mask - {last_cpu(HERE)})
    os.sched_setaffinity(interpreter, {other})
    assert _where(plugin)["cpu"] == other
    os.sched_setaffinity(interpreter, mask)
    return other


@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_the_hint_finds_the_interpreter_inside_or_outside_the_sandbox(start_worker, monkeypatch, sandbox):
    monkeypatch.setenv("APERIO_PLUGIN_SANDBOX", sandbox)
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)

    interpreter = process._interpreter_pid()

    assert (interpreter == process.pid) is (sandbox == "none" or plugin.status().containment != "bwrap")
    assert interpreter is not None
    assert start_time(interpreter) == _where(plugin)["who"]


def test_a_worker_on_another_cpu_is_brought_beside_its_caller_for_one_call_and_then_left_free(start_worker, own_mask):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()
    worker_mask = os.sched_getaffinity(interpreter)
    for _attempt in range(5):  # this thread may be moved between two lines on a busy machine: try again
        elsewhere = _apart(plugin, interpreter, own_mask)
        process.placement._countdown = 1  # the next call is the one hinted
        here = last_cpu(HERE)
        hinted = _where(plugin)
        if hinted["allowed"] == [here]:
            break

    assert hinted["allowed"] == [here] != [elsewhere]  # restricted to the caller's CPU while it was woken
    assert hinted["cpu"] == here
    assert os.sched_getaffinity(interpreter) == worker_mask  # and its own mask put back at once
    assert _where(plugin)["allowed"] == sorted(worker_mask)


def test_short_calls_made_alone_are_hinted_every_so_often_and_the_mask_is_always_put_back(start_worker, own_mask):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()

    answers = [_where(plugin) for _ in range(4 * _placement.HINT_EVERY)]

    restricted = [answer for answer in answers if answer["allowed"] != sorted(own_mask)]
    assert 1 <= process.placement.hints <= 4  # a call slowed past SHORT_CALL by a busy machine skips one
    assert len(restricted) == process.placement.hints
    assert all(len(answer["allowed"]) == 1 for answer in restricted)
    assert os.sched_getaffinity(interpreter) == own_mask


def test_a_pinned_caller_gives_no_hint(start_worker, own_mask):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()
    _apart(plugin, interpreter, own_mask)
    os.sched_setaffinity(0, {last_cpu(HERE)})

    answers = [_where(plugin) for _ in range(2 * _placement.HINT_EVERY)]

    assert process.placement.hints == 0
    assert all(answer["allowed"] == sorted(own_mask) for answer in answers)


def test_a_worker_that_may_not_run_on_the_callers_cpu_is_left_where_it_is(start_worker, own_mask):
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()
    elsewhere = {min(own_mask - {last_cpu(HERE)})}
    os.sched_setaffinity(interpreter, elsewhere)  # an operator confined the worker

    answers = [_where(plugin) for _ in range(2 * _placement.HINT_EVERY)]

    assert process.placement.hints == 0
    assert all(answer["allowed"] == sorted(elsewhere) for answer in answers)
    assert os.sched_getaffinity(interpreter) == elsewhere


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield child
    child.kill()
    child.wait()


def test_long_calls_and_calls_among_others_are_not_hinted(sleeper, own_mask):
    placement = Placement(lambda: sleeper.pid, every=1)

    assert placement.due()
    assert placement.before(alone=False) is False  # other calls in flight: no one CPU to be beside
    placement.after(False, _placement.SHORT_CALL * 2)  # a long call: its wake-ups do not matter
    assert placement.due()
    assert placement.before(alone=True) is False
    placement.after(False, 0.0001)
    assert os.sched_getaffinity(sleeper.pid) == own_mask
    assert placement.hints == 0

    assert placement.due()
    assert placement.before(alone=True) is True
    assert len(os.sched_getaffinity(sleeper.pid)) == 1
    placement.after(True, 0.0001)
    assert os.sched_getaffinity(sleeper.pid) == own_mask
    assert placement.hints == 1


def test_a_worker_gone_before_its_hint_is_given_no_hint_and_nothing_is_left_held(sleeper):
    placement = Placement(lambda: sleeper.pid, every=1)
    sleeper.kill()
    sleeper.wait()

    assert placement.due()
    assert placement.before(alone=True) is False
    assert placement.hints == 0
    assert placement._lock.acquire(blocking=False)  # not left held by the refused hint


def test_with_spinning_on_no_hint_is_given_and_calls_answer_where_the_scheduler_puts_them(
    start_worker, own_mask, monkeypatch
):
    monkeypatch.setenv("APERIO_WORKER_SPIN_US", "50")
    plugin = start_worker(WHERE_ID, source=WHERE_SOURCE)
    process = _process(plugin)
    assert process.board is not None
    assert process.placement is None  # the worker's mask is never touched: no hint to give or put back

    answers = [_where(plugin) for _ in range(4 * _placement.HINT_EVERY)]

    assert all(answer["allowed"] == sorted(own_mask) for answer in answers)
    assert len({answer["who"] for answer in answers}) == 1
