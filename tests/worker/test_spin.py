"""Spinning for an answer only while host and worker run on different CPUs (`worker/_spin.py`):
the decision as a pure function, the CPU board shared through a real memfd, the worker's receive
on real pipes, and calls through real workers with spinning on and off."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aperio_hookspecs import Finding, Resource
from aperio_plugins import HostSettings
from aperio_plugins.errors import ConfigurationError
from aperio_plugins.worker import _protocol as protocol
from aperio_plugins.worker import _spin
from aperio_plugins.worker._spin import WORKER_SLOT, CpuBoard, spin_budget
from aperio_plugins.worker.serve._server import WorkerChannel
from worker.helpers import send_frame_later

BUDGET = 50e-6

# own CPU, peer CPU, CPUs allowed, last wait, budget -> spins?
DECISIONS = [
    pytest.param(0, 1, 2, 20e-6, BUDGET, True, id="apart-short-calls"),
    pytest.param(1, 0, 8, 0.0, BUDGET, True, id="apart-first-call"),
    pytest.param(0, 1, 2, 4 * BUDGET, BUDGET, True, id="apart-wait-at-the-limit"),
    pytest.param(0, 0, 2, 20e-6, BUDGET, False, id="together-the-peer-needs-this-cpu"),
    pytest.param(0, 1, 1, 20e-6, BUDGET, False, id="pinned-to-one-cpu"),
    pytest.param(0, None, 2, 20e-6, BUDGET, False, id="peer-cpu-unknown"),
    pytest.param(-1, 1, 2, 20e-6, BUDGET, False, id="own-cpu-unknown"),
    pytest.param(0, 1, 2, 4 * BUDGET + 1e-6, BUDGET, False, id="apart-but-calls-are-long"),
    pytest.param(0, 1, 2, float("inf"), BUDGET, False, id="apart-after-an-idle-spell"),
    pytest.param(0, 1, 2, 20e-6, 0.0, False, id="switched-off"),
]


@pytest.mark.parametrize(("own", "peer", "allowed", "wait", "budget", "spins"), DECISIONS)
def test_the_spin_decision(own: int, peer: int | None, allowed: int, wait: float, budget: float, spins: bool) -> None:
    assert spin_budget(own, peer, allowed, wait, budget) == (budget if spins else 0.0)


SPIN_VARIABLE = "APERIO_WORKER_SPIN_US"


@pytest.mark.parametrize(("value", "spin_us"), [(None, 50), ("0", 0), ("30", 30), ("10000", 10_000)])
def test_the_spin_setting_is_a_host_setting(monkeypatch: pytest.MonkeyPatch, value: str | None, spin_us: int) -> None:
    if value is None:
        monkeypatch.delenv(SPIN_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(SPIN_VARIABLE, value)
    assert HostSettings.from_environment().worker_spin_us == spin_us


@pytest.mark.parametrize("value", ["-1", "fifty", "1.5", "10001", ""])
def test_a_bad_spin_setting_is_a_configuration_error_naming_it(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(SPIN_VARIABLE, value)
    with pytest.raises(ConfigurationError, match=SPIN_VARIABLE):
        HostSettings.from_environment()


def test_a_bad_spin_setting_stops_a_command_before_it_runs(tmp_path: Path) -> None:
    # Refused with the other settings when the CLI reads them: a clear error, no traceback, nothing listed.
    environment = {
        **os.environ,
        SPIN_VARIABLE: "a lot",
        "APERIO_PLUGINS_DIR": str(tmp_path / "plugins"),
        "APERIO_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from aperio_plugins.cli import main; sys.exit(main())", "plugin", "list"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert f"{SPIN_VARIABLE}='a lot'" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "state").exists()


two_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="a split between two CPUs needs Linux and at least two CPUs",
)


@pytest.fixture
def own_mask() -> Iterator[set[int]]:
    mask = os.sched_getaffinity(0)
    yield mask
    os.sched_setaffinity(0, mask)


@pytest.fixture
def boards() -> Iterator[tuple[CpuBoard, CpuBoard]]:
    created = CpuBoard.create(BUDGET)
    if created is None:
        pytest.skip("no memfd here")
    host, fd = created
    worker = CpuBoard(fd, WORKER_SLOT, BUDGET)  # a second mapping of the same memory, as the worker makes
    os.close(fd)
    yield host, worker
    host.close()
    worker.close()


def test_each_side_reads_the_cpu_the_other_published(boards: tuple[CpuBoard, CpuBoard]) -> None:
    host, worker = boards
    assert host.peer() is None  # nothing published yet
    assert worker.peer() is None

    cpu = host.publish()

    assert cpu == _spin._cpu_function()() >= 0  # type: ignore[misc]  # sched_getcpu exists on Linux
    assert worker.peer() == cpu
    assert host.peer() is None


@two_cpus
def test_apart_names_this_cpu_only_while_the_other_side_is_on_another(
    boards: tuple[CpuBoard, CpuBoard], own_mask: set[int]
) -> None:
    host, worker = boards
    for _attempt in range(10):  # this thread may move between two lines on a busy machine: try again
        cpu = host.publish()
        worker.publish()  # the same thread: the same CPU, unless it just moved
        together = [host.apart() for _ in range(_spin.CHECK_EVERY)]
        other = min(own_mask - {cpu})
        worker._map[WORKER_SLOT] = other + 1  # as a worker on another CPU writes it
        # Found together, it looks again only every CHECK_EVERY waits; found apart, at every wait.
        apart = [host.apart() for _ in range(_spin.CHECK_EVERY + 2)]
        if together == [-1] * _spin.CHECK_EVERY and apart[-3:] == [cpu] * 3:
            break
    else:
        pytest.fail("apart() never told a worker on another CPU from one on this CPU")
    assert host.budget(cpu, 10e-6) == BUDGET
    assert host.budget(cpu, 1.0) == 0.0  # the last wait was long: a spin would not have caught it


@two_cpus
def test_a_thread_pinned_to_one_cpu_is_never_apart_and_still_says_where_it_is(
    boards: tuple[CpuBoard, CpuBoard], own_mask: set[int]
) -> None:
    host, worker = boards
    pinned = max(own_mask)
    os.sched_setaffinity(0, {pinned})
    worker._map[WORKER_SLOT] = min(own_mask) + 1

    assert [host.apart() for _ in range(3 * _spin.AFFINITY_REFRESH)] == [-1] * 3 * _spin.AFFINITY_REFRESH
    assert worker.peer() == pinned


def test_a_timed_wait_spins_by_the_budget_and_counts_what_the_spin_caught(boards: tuple[CpuBoard, CpuBoard]) -> None:
    host, worker = boards
    host.allowed = 2  # as apart() finds it on a machine with two CPUs
    worker._map[WORKER_SLOT] = 2  # the worker last on CPU 1; this side says it is on CPU 0
    given: list[float] = []

    def quick(spin: float) -> str:
        given.append(spin)
        return "answer"

    assert host.timed_wait(0, 10e-6, quick)[0] == "answer"
    assert (given, host.spins, host.caught) == ([BUDGET], 1, 1)

    def slow(spin: float) -> None:
        given.append(spin)
        time.sleep(BUDGET * 2)

    result, waited = host.timed_wait(0, 10e-6, slow)
    assert result is None
    assert waited >= BUDGET * 2
    assert (given[-1], host.spins, host.caught) == (BUDGET, 2, 1)  # spun, and the answer came later
    host.timed_wait(0, waited * 10, quick)  # the last wait was long: no spin, nothing counted
    host.timed_wait(1, 10e-6, quick)  # the worker is on this CPU: no spin
    assert (given[-2:], host.spins, host.caught) == ([0.0, 0.0], 2, 1)


def test_a_value_that_does_not_name_a_cpu_reads_as_unknown(boards: tuple[CpuBoard, CpuBoard]) -> None:
    host, worker = boards
    for value in (0, 255):
        worker._map[WORKER_SLOT] = value
        assert host.peer() is None
        assert host.apart() == -1
        assert host.budget(0, 0.0) == 0.0


@pytest.fixture
def pipes() -> Iterator[tuple[WorkerChannel, int]]:
    to_worker, host_write = os.pipe()
    worker_write, from_worker = os.pipe()
    channel = WorkerChannel(to_worker, worker_write, 1 << 20)
    yield channel, host_write
    for fd in (to_worker, host_write, worker_write, from_worker):
        os.close(fd)


@pytest.mark.parametrize(
    ("spin", "delay"),
    [
        pytest.param(0.05, 0.001, id="arrives-within-the-spin"),
        pytest.param(0.001, 0.05, id="arrives-after-the-spin-then-the-read-blocks"),
        pytest.param(0.0, 0.01, id="no-spin"),
    ],
)
def test_the_worker_receives_the_next_message_whether_it_came_during_the_spin_or_after(
    pipes: tuple[WorkerChannel, int], spin: float, delay: float
) -> None:
    channel, host_write = pipes
    start = time.perf_counter()
    sender = send_frame_later(host_write, [protocol.PING, 7], delay)

    message = channel.receive(spin=spin)

    sender.join()
    assert message == [protocol.PING, 7]
    assert time.perf_counter() - start >= delay


def test_the_worker_sees_the_end_of_input_during_a_spin(pipes: tuple[WorkerChannel, int]) -> None:
    to_worker, host_write = os.pipe()
    channel = WorkerChannel(to_worker, pipes[0].fd_out, 1 << 20)
    os.close(host_write)
    try:
        assert channel.receive(spin=0.01) is None
    finally:
        os.close(to_worker)


# -- through real workers -------------------------------------------------------------------------

ECHO_ID = "acme.echo"
# A hook that answers with what it was given and where it ran (CPU, and which process).
ECHO_SOURCE = """
from aperio_hookspecs import hookimpl

_WHO = open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()[19].decode()

@hookimpl
def aperio_finding_raised(finding):
    cpu = int(open("/proc/thread-self/stat", "rb").read().rsplit(b")", 1)[1].split()[36])
    return {"id": finding.id, "title": finding.title, "cpu": cpu, "who": _WHO}
"""


def _finding(number: int) -> Finding:
    return Finding(
        id=f"f-{number}",
        provider="test",
        title=f"finding {number}",
        severity="low",
        resource=Resource(type="file", id=str(number)),
        detected_at=datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.timezone.utc),
    )


def _process(plugin: Any) -> Any:
    return plugin._aperio_lifecycle.acquire(time.monotonic() + 10)


@two_cpus
@pytest.mark.parametrize("spin_us", ["2000", "0"])
def test_calls_answer_correctly_with_host_and_worker_apart_spinning_on_or_off(
    start_worker: Any, monkeypatch: pytest.MonkeyPatch, own_mask: set[int], spin_us: str
) -> None:
    monkeypatch.setenv(SPIN_VARIABLE, spin_us)  # 2 ms: long enough to catch every answer, even under load
    plugin = start_worker(ECHO_ID, source=ECHO_SOURCE)
    process = _process(plugin)
    interpreter = process._interpreter_pid()
    here, there = sorted(own_mask)[:2]
    os.sched_setaffinity(interpreter, {there})  # an operator's confinement: placement hints leave it alone

    answers = []
    for number in range(200):
        os.sched_setaffinity(0, {here})  # moves this thread to `here` ...
        os.sched_setaffinity(0, own_mask)  # ... where it stays, allowed on every CPU again
        answers.append(plugin.aperio_finding_raised(finding=_finding(number)))

    assert [(answer["id"], answer["title"]) for answer in answers] == [(f"f-{n}", f"finding {n}") for n in range(200)]
    assert {answer["cpu"] for answer in answers} == {there}
    assert len({answer["who"] for answer in answers}) == 1  # one worker served them all: none crashed
    if spin_us == "0":
        assert process.board is None  # no board at all: calls go exactly as before
    else:
        assert process.board.spins > 0  # the host saw the worker on the other CPU and spun
        assert process.board.caught > 0


@two_cpus
def test_host_and_worker_on_one_cpu_never_spin(start_worker: Any, own_mask: set[int]) -> None:
    plugin = start_worker(ECHO_ID, source=ECHO_SOURCE)
    process = _process(plugin)
    cpu = min(own_mask)
    os.sched_setaffinity(process._interpreter_pid(), {cpu})
    os.sched_setaffinity(0, {cpu})

    answers = [plugin.aperio_finding_raised(finding=_finding(number)) for number in range(100)]

    assert [answer["id"] for answer in answers] == [f"f-{n}" for n in range(100)]
    assert process.board is not None
    assert process.board.spins == 0  # the worker needs this CPU: spinning would take it away


def test_calls_from_many_threads_answer_correctly_with_spinning_on(start_worker: Any) -> None:
    plugin = start_worker(ECHO_ID, source=ECHO_SOURCE)
    errors: list[BaseException] = []
    results: dict[int, list[str]] = {}

    def caller(index: int) -> None:
        try:
            results[index] = [
                plugin.aperio_finding_raised(finding=_finding(index * 1000 + n))["id"]  # type: ignore[attr-defined]
                for n in range(50)
            ]
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors
    assert results == {index: [f"f-{index * 1000 + n}" for n in range(50)] for index in range(4)}
