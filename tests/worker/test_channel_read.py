"""The host channel's read: whether it tries the pipe before it waits changes how many system calls
a call costs, never what it reads. Real pipes and a real writer thread; `os.read` is only counted."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pytest

from aperio_plugins.worker import WorkerSettings
from aperio_plugins.worker import _protocol as protocol
from aperio_plugins.worker.supervise import _channel
from aperio_plugins.worker.supervise._channel import HostChannel
from worker.helpers import send_frame, send_frame_later


class _Channel(HostChannel):
    """A host channel with nothing behind it but its pipes: a kill is recorded, not carried out."""

    def __init__(self, fd_write: int, fd_read: int) -> None:
        super().__init__(fd_write, fd_read, WorkerSettings())
        self.killed: list[str] = []

    def kill(self, reason: str) -> None:
        self.killed.append(reason)


@pytest.fixture
def channel() -> Iterator[tuple[_Channel, int]]:
    """The channel and the write end of the pipe it reads (the worker's stdout)."""
    read_end, write_end = os.pipe()
    unused_read, unused_write = os.pipe()
    opened = _Channel(unused_write, read_end)
    yield opened, write_end
    for fd in (read_end, write_end, unused_read, unused_write):
        with contextlib.suppress(OSError):  # a test may have closed the write end already
            os.close(fd)


@pytest.fixture
def empty_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reads that found the pipe empty (each is a system call that bought nothing)."""
    found_nothing: list[int] = []
    real_read = os.read

    def counted(fd: int, size: int) -> bytes:
        try:
            return real_read(fd, size)
        except BlockingIOError:
            found_nothing.append(fd)
            raise

    monkeypatch.setattr(_channel.os, "read", counted)
    return found_nothing


def test_an_answer_already_waiting_is_read_at_once_and_keeps_reads_trying_the_pipe_first(
    channel: tuple[_Channel, int], empty_reads: list[int]
) -> None:
    host, worker_out = channel
    for number in range(40):
        _answer_waiting(host, worker_out, number)
    assert empty_reads == []


def _reads_until_waiting_first() -> int:
    """How many reads in a row that find the pipe empty make reads wait first, from a fresh channel."""
    share, reads = 0.0, 0
    while share < _channel._EMPTY_SHARE_TO_WAIT:
        share += (1.0 - share) * _channel._SHARE_WEIGHT
        reads += 1
    return reads


def _answer_late(
    host: _Channel, worker_out: int, number: int, choice: _channel.ReadChoice | None = None, delay: float = 0.01
) -> None:
    """Read answer `number`, which the worker's end writes only `delay` seconds from now."""
    sender = send_frame_later(worker_out, [protocol.RESULT, number, None], delay)
    assert host.read(5.0, choice=choice) == [[protocol.RESULT, number, None]]
    sender.join()


def _answer_waiting(host: _Channel, worker_out: int, number: int) -> None:
    """Read answer `number`, already in the pipe when the read starts."""
    send_frame(worker_out, [protocol.RESULT, number, None])
    assert host.read(5.0) == [[protocol.RESULT, number, None]]


def test_once_most_reads_find_the_pipe_empty_reads_wait_first_and_try_the_pipe_only_every_probe(
    channel: tuple[_Channel, int], empty_reads: list[int]
) -> None:
    host, worker_out = channel
    switch = _reads_until_waiting_first()
    assert 4 < switch < 40  # a few misses among hits do not change the choice; many do
    calls = switch + 4 * _channel._PROBE_EVERY
    for number in range(calls):
        _answer_late(host, worker_out, number)
    # Trying the pipe first every time would have found it empty `calls` times. (A probe that a slow
    # machine let find its answer there costs one more read.)
    assert switch <= len(empty_reads) <= switch + 2 * (calls - switch) // _channel._PROBE_EVERY


def test_a_few_empty_reads_among_many_that_find_their_answer_do_not_change_the_choice(
    channel: tuple[_Channel, int], empty_reads: list[int]
) -> None:
    host, worker_out = channel
    for round_number in range(8):
        for number in range(3):  # misses come in short runs among hits
            _answer_late(host, worker_out, number)
        for number in range(40):
            _answer_waiting(host, worker_out, number)
        assert len(empty_reads) == 3 * (round_number + 1)  # every late answer was still tried first


def test_probes_that_find_the_answer_waiting_bring_back_trying_the_pipe_first(
    channel: tuple[_Channel, int], empty_reads: list[int]
) -> None:
    host, worker_out = channel
    switch = _reads_until_waiting_first()
    for number in range(switch + 2):
        _answer_late(host, worker_out, number)
    waiting_first = len(empty_reads)
    _answer_late(host, worker_out, 0)
    assert len(empty_reads) == waiting_first  # it waited first: no read found the pipe empty
    # Answers waiting from now on: the probes find them there, and reads go back to trying first.
    for number in range(40 * _channel._PROBE_EVERY):
        _answer_waiting(host, worker_out, number)
    _answer_late(host, worker_out, 99)
    assert len(empty_reads) == waiting_first + 1  # it tried the pipe first again


@pytest.mark.parametrize("waited_before", [False, True], ids=["trying-the-pipe-first", "waiting-first"])
def test_either_way_a_read_times_out_empty_sees_the_end_of_file_and_reads_split_frames(
    channel: tuple[_Channel, int], waited_before: bool
) -> None:
    host, worker_out = channel
    if waited_before:
        for number in range(_reads_until_waiting_first()):
            _answer_late(host, worker_out, number)

    start = time.monotonic()
    assert host.read(0.05) == []
    assert time.monotonic() - start >= 0.04

    data = protocol.frame(protocol.pack([protocol.RESULT, 2, "two"]))
    os.write(worker_out, data[:3])
    assert host.read(0.05) == []  # half a header: nothing yet, and nothing lost
    os.write(worker_out, data[3:])
    assert host.read(5.0) == [[protocol.RESULT, 2, "two"]]

    os.close(worker_out)  # the worker's end closes
    assert host.read(5.0) is None
    assert host.killed == []


def test_each_kind_of_call_keeps_its_own_choice(channel: tuple[_Channel, int], empty_reads: list[int]) -> None:
    host, worker_out = channel
    slow, quick = _channel.ReadChoice(), _channel.ReadChoice()
    for number in range(_reads_until_waiting_first() + 4):
        _answer_late(host, worker_out, number, slow)
    before = len(empty_reads)
    _answer_late(host, worker_out, 7, quick, delay=0.05)
    assert len(empty_reads) == before + 1  # the quick kind still tries the pipe first
    _answer_late(host, worker_out, 8, slow, delay=0.05)
    assert len(empty_reads) == before + 1  # the slow kind waits first


def test_calls_keep_a_choice_per_label(channel: tuple[_Channel, int], empty_reads: list[int]) -> None:
    host, worker_out = channel
    call_ids = iter(range(1, 1000))  # the channel numbers its calls from 1

    def call(label: str, delay: float) -> None:
        sender = send_frame_later(worker_out, [protocol.RESULT, next(call_ids), None], delay)
        message = [protocol.HOOK, None, "aperio_finding_raised", {}, 5.0]
        answer = host.request(message, None, label, time.monotonic() + 5.0, protocol.pack_plain)
        sender.join()
        assert answer[0] == protocol.RESULT

    for _ in range(_reads_until_waiting_first() + 4):
        call("connector 'slow'", 0.01)
    before = len(empty_reads)
    call("hook quick", 0.05)
    assert len(empty_reads) == before + 1  # a label not seen before tries the pipe first
    call("connector 'slow'", 0.05)
    assert len(empty_reads) == before + 1  # the slow label still waits first


def test_choices_are_kept_for_at_most_max_choices_labels_and_the_rest_share_one(channel: tuple[_Channel, int]) -> None:
    host, worker_out = channel
    labels = [f"hook h{number}" for number in range(_channel._MAX_CHOICES + 40)]
    for call_id, label in enumerate(labels, start=1):
        send_frame(worker_out, [protocol.RESULT, call_id, None])
        message = [protocol.HOOK, None, "h", {}, 5.0]
        assert host.request(message, None, label, time.monotonic() + 5.0, protocol.pack_plain)[1] == call_id
    assert len(host._choices) == _channel._MAX_CHOICES
    assert host._choice_for(labels[-1]) is host._shared_choice
