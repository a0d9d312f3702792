"""The host channel's read: whether it tries the pipe before it waits changes how many system calls
a call costs, never what it reads. Real pipes and a real writer thread; `os.read` is only counted."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aperio_plugins.worker import WorkerSettings
from aperio_plugins.worker import _protocol as protocol
from aperio_plugins.worker.supervise import _channel
from aperio_plugins.worker.supervise._channel import HostChannel


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


def _send(fd: int, message: list[Any]) -> None:
    protocol.write_frame(fd, protocol.pack(message))


def _send_later(fd: int, message: list[Any], delay: float) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)
        _send(fd, message)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def test_an_answer_already_waiting_is_read_at_once_and_keeps_reads_trying_the_pipe_first(
    channel: tuple[_Channel, int], empty_reads: list[int]
) -> None:
    host, worker_out = channel
    for number in range(40):
        _send(worker_out, [protocol.RESULT, number, None])
        assert host.read(5.0) == [[protocol.RESULT, number, None]]
    assert empty_reads == []


def test_after_a_read_finds_the_pipe_empty_reads_wait_first_and_try_the_pipe_only_every_probe(
    channel: tuple[_Channel, int], empty_reads: list[int]
) -> None:
    host, worker_out = channel
    calls = 3 * _channel._PROBE_EVERY
    for number in range(calls):
        sender = _send_later(worker_out, [protocol.RESULT, number, None], 0.01)
        assert host.read(5.0) == [[protocol.RESULT, number, None]]
        sender.join()
    # The first read found nothing; after it, only the probes may, one every _PROBE_EVERY reads
    # (and a probe that a slow machine let find its answer costs one more read). Trying the pipe
    # first every time would have found it empty `calls` times.
    assert 1 <= len(empty_reads) <= 1 + 2 * (calls // _channel._PROBE_EVERY)


def test_a_probe_that_finds_the_answer_waiting_goes_back_to_trying_the_pipe_first(
    channel: tuple[_Channel, int], empty_reads: list[int]
) -> None:
    host, worker_out = channel
    sender = _send_later(worker_out, [protocol.RESULT, 0, None], 0.05)
    assert host.read(5.0) == [[protocol.RESULT, 0, None]]
    sender.join()
    assert len(empty_reads) == 1
    # Answers waiting from now on: within one probe period a read finds one at once, and the reads
    # after it find theirs without waiting first.
    for number in range(1, 2 * _channel._PROBE_EVERY + 1):
        _send(worker_out, [protocol.RESULT, number, None])
        assert host.read(5.0) == [[protocol.RESULT, number, None]]
    empty_before = len(empty_reads)
    sender = _send_later(worker_out, [protocol.RESULT, 99, None], 0.05)
    assert host.read(5.0) == [[protocol.RESULT, 99, None]]
    sender.join()
    assert len(empty_reads) == empty_before + 1  # it tried the pipe first again


@pytest.mark.parametrize("waited_before", [False, True], ids=["trying-the-pipe-first", "waiting-first"])
def test_either_way_a_read_times_out_empty_sees_the_end_of_file_and_reads_split_frames(
    channel: tuple[_Channel, int], waited_before: bool
) -> None:
    host, worker_out = channel
    if waited_before:
        sender = _send_later(worker_out, [protocol.PING, 1], 0.05)
        assert host.read(5.0) == [[protocol.PING, 1]]
        sender.join()

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
