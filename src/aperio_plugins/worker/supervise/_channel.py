"""The host's end of a worker's pipes: frames out, frames in, routed to the calls they answer.

There is no reader thread. A caller waiting for its answer reads the pipe
itself when nobody else is reading (it holds `_read_lock`, "the lead") and puts
any frame that belongs to another call into that call's queue; when it is done
it passes the lead to another waiting call. A round trip with one caller thus
has no thread hand-off at all: a hand-off through a reader thread costs more
than the rest of the round trip. With no call in flight nobody needs to read:
the worker's death is seen by its watcher thread (blocked in `waitpid`), and
pongs are read by the supervisor's `drain()`.
"""

from __future__ import annotations

import functools
import itertools
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from ...errors import WorkerError
from .. import _protocol as protocol
from .._settings import WorkerSettings
from .._spin import CpuBoard, spin_until_ready

_SAFETY_WAKE = 1.0  # a waiting call re-checks for the lead this often, whatever it was told
_EMPTY_SHARE_TO_WAIT = 0.5
"""Reads wait in poll() before they read while more than this share of recent reads that tried the
pipe first found it empty. Measured on one CPU: the trivial call's reads found nothing 10% to 27% of
the time, and reading first was still 3 µs faster a call than waiting first; a `sync`'s found
nothing 78% to 92% of the time, and waiting first was 8 µs faster."""
_SHARE_WEIGHT = 1 / 32
"""The weight of each read in that share (a moving average): misses come in runs of two to four
among mostly hits, and a run of four must not change the choice."""
_PROBE_EVERY = 16
"""While reads wait first, every this many still try the pipe first, to keep the share current."""
_MAX_CHOICES = 256
"""Read choices kept per call label (a plugin's hooks and registrations); labels beyond share one."""


class _Lead:
    """Queued to a waiting call: nobody may be reading the pipe now, try to take the lead."""


LEAD = _Lead()


class Failed:
    """Queued to a waiting call when the worker is gone; builds the error to raise."""

    __slots__ = ("error",)

    def __init__(self, error: Callable[[], WorkerError]) -> None:
        self.error = error


class ReadChoice:
    """Whether reads try the pipe before they wait, for one kind of call (`HostChannel.read`)."""

    __slots__ = ("empty_share", "probe_in")

    def __init__(self) -> None:
        self.empty_share = 0.0  # moving share of reads that tried the pipe first and found it empty
        self.probe_in = _PROBE_EVERY


class Call:
    """One call in flight: its queue receives the frames that belong to it."""

    __slots__ = ("choice", "context", "deadline", "id", "label", "queue")

    def __init__(self, call_id: int, context: Any, label: str, deadline: float, choice: ReadChoice) -> None:
        self.id = call_id
        self.context = context
        self.label = label
        self.deadline = deadline
        self.choice = choice
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()


class HostChannel:
    """Frames to and from one worker, multiplexed by call id. Subclasses say what to do with
    context requests, logs, a broken protocol and a timed-out call."""

    def __init__(self, fd_write: int, fd_read: int, options: WorkerSettings) -> None:
        self.options = options
        self._fd_write = fd_write
        self._fd_read = fd_read
        self._decoder = protocol.FrameDecoder(options.max_frame_bytes)
        self._poller = select.poll()
        self._poller.register(fd_read, select.POLLIN)
        # Both of the host's ends are non-blocking: a read may try the pipe before it waits in
        # poll() (see `read`), and a full pipe waits in poll() with a deadline.
        os.set_blocking(fd_read, False)
        os.set_blocking(fd_write, False)
        self._write_poller = select.poll()
        self._write_poller.register(fd_write, select.POLLOUT)
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._state = threading.Lock()
        self._idle = threading.Condition(self._state)
        self._idle_waiters = 0  # threads waiting on _idle: notifying nobody still costs a Python call per call
        self._ids = itertools.count(1)
        self._calls: dict[int, Call] = {}
        self._abandoned: dict[int, float] = {}  # cancelled call id -> end of its grace period
        self._pings: dict[int, float] = {}  # ping id -> when it was sent
        self._dead = False  # end of file seen: every call fails from now on
        self._poisoned = False  # a malformed frame was read: nothing after it can be trusted
        # The CPU board shared with the worker (`_spin.py`), when spinning is on: a caller alone may
        # spin for its answer while the worker runs on another CPU.
        self.board: CpuBoard | None = None
        self._last_wait = 0.0  # seconds from the last spinnable call's write to its answer
        self._poll_now = functools.partial(self._poller.poll, 0)
        # Whether a read tries the pipe before it waits, by call label: see `read`. Reads made for no
        # call in particular (draining pongs, settling a cancel) share one.
        self._choices: dict[str, ReadChoice] = {}
        self._shared_choice = ReadChoice()

    # -- what subclasses provide -------------------------------------------------

    def kill(self, reason: str) -> None:
        raise NotImplementedError

    def crash_error(self) -> WorkerError:
        raise NotImplementedError

    def wait_exit(self) -> None:
        """Called at end of file: return once the process has exited (killing it if need be)."""
        raise NotImplementedError

    def changed(self) -> None:
        """The channel became unusable, or usable again (a late answer arrived)."""

    def serve_context(self, call: Call, message: list[Any]) -> None:
        raise NotImplementedError

    def refuse_context(self, message: list[Any]) -> None:
        raise NotImplementedError

    def log(self, call: Call | None, message: list[Any]) -> None:
        raise NotImplementedError

    def time_out(self, call: Call) -> None:
        """Called when `call` passes its deadline, after it was unregistered; must raise."""
        raise NotImplementedError

    # -- writing -------------------------------------------------------------------

    def write(self, payload: bytes, deadline: float | None = None) -> None:
        """Send one frame by `deadline` (default: a grace period from now).

        A worker that cannot be written to, or whose stdin stays full past the
        deadline (it stopped reading), is killed: its end of file then fails the
        calls in flight. Writing never blocks a caller beyond its deadline.
        """
        data = protocol.frame(payload)
        try:
            with self._write_lock:
                # The usual case, a frame that fits in the pipe, is one system call.
                try:
                    sent = os.write(self._fd_write, data)
                except BlockingIOError:
                    sent = 0
                written = sent == len(data) or self._write_until(data, deadline, sent)
        except OSError as exc:
            self.kill(f"its stdin could not be written ({exc.strerror or exc})")
            return
        if not written:
            self.kill("its stdin stayed full: it stopped reading")

    def _write_until(self, data: bytes, deadline: float | None, written: int = 0) -> bool:
        # The host's end of the pipe is non-blocking: a full pipe waits in poll(), with a deadline.
        if deadline is None:
            deadline = time.monotonic() + self.options.grace_period
        view = memoryview(data)[written:]
        while view:
            try:
                view = view[os.write(self._fd_write, view) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._write_poller.poll(max(1, int(remaining * 1000)))
        return True

    # -- reading -------------------------------------------------------------------

    def read(self, timeout: float, spin: float = 0.0, choice: ReadChoice | None = None) -> list[list[Any]] | None:
        """Return the messages that arrive within `timeout` seconds ([] if none), None at end of file.

        With `spin` (seconds, at most `timeout`), check for data without sleeping for that long first.
        The caller holds the lead. A malformed frame kills the worker.

        Whether the answer is already in the pipe when its caller comes to read is the scheduler's
        doing: on one CPU here, the worker woken by a trivial call ran at once and answered before
        its caller read, and the worker woken by a `sync` did not. A read that finds the pipe empty
        costs more than the poll() it would have saved, so reads for the kind of call `choice` keeps
        (default: the shared one) try the pipe first while most recent ones found their data
        there, and otherwise wait in poll() first, still trying the pipe first every
        `_PROBE_EVERY`th read (docs/worker-protocol.md, "Fourth pass").
        """
        if choice is None:
            choice = self._shared_choice
        data = None
        try_first = choice.empty_share < _EMPTY_SHARE_TO_WAIT
        if not try_first:
            choice.probe_in -= 1
            if choice.probe_in <= 0:
                choice.probe_in = _PROBE_EVERY
                try_first = True
        if try_first:
            try:
                data = os.read(self._fd_read, 1 << 16)
                choice.empty_share -= choice.empty_share * _SHARE_WEIGHT
            except BlockingIOError:
                choice.empty_share += (1.0 - choice.empty_share) * _SHARE_WEIGHT
        if data is None:
            if spin > 0 and spin_until_ready(self._poll_now, min(spin, timeout)):
                pass  # the answer came while this thread was still awake: no wake-up to wait for
            elif not self._poller.poll(max(0, int(timeout * 1000) + (timeout > 0))):
                return []
            try:
                data = os.read(self._fd_read, 1 << 16)
            except BlockingIOError:
                return []
        if not data:
            return None
        if self._poisoned:
            return []
        try:
            return self._decoder.feed(data)
        except protocol.ProtocolError as exc:
            self._poisoned = True
            self.kill(f"it broke the protocol: {exc}")
            return []

    def _release_lead(self, exclude: Call | None) -> None:
        with self._state:
            self._read_lock.release()
            for call in self._calls.values():
                if call is not exclude:
                    call.queue.put(LEAD)
                    break

    def drain(self) -> None:
        """Read and route what has arrived, without waiting, unless somebody else is reading."""
        if not self._read_lock.acquire(blocking=False):
            return
        try:
            while not self._dead:
                messages = self.read(0)
                if messages is None:
                    self.on_eof()
                if not messages:
                    break
                for message in messages:
                    self.route(message)
        finally:
            self._release_lead(None)

    def settle(self, deadline: float) -> bool:
        """Read, as the lead, until no cancelled call is left unanswered, the worker is gone, or
        `deadline`. Returns False at once if somebody else is reading.

        A caller waiting for this worker to take calls again uses it: nobody
        else may be reading when the late answer comes.
        """
        if not self._read_lock.acquire(blocking=False):
            return False
        try:
            while self._abandoned and not self._dead:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                messages = self.read(remaining)
                if messages is None:
                    self.on_eof()
                    break
                for message in messages:
                    self.route(message)
        finally:
            self._release_lead(None)
        return True

    def route(self, message: list[Any]) -> None:
        """Hand `message` to its call, or deal with it here; a stray frame kills the worker."""
        kind = message[0]
        if kind == protocol.PONG and len(message) == 2:
            with self._state:
                self._pings.pop(message[1], None)
            return
        if (kind not in protocol.TERMINAL and kind not in (protocol.CTX, protocol.LOG)) or len(message) < 2:
            self.kill(f"it sent an unexpected {str(kind)[:40]!r} message")
            return
        settled = False
        with self._state:
            call = self._calls.get(message[1])
            if call is not None:
                call.queue.put(message)
                return
            late = message[1] in self._abandoned
            if late and kind in protocol.TERMINAL:
                del self._abandoned[message[1]]  # the late answer to a cancelled call is discarded
                settled = not self._abandoned
        if settled:
            self.changed()
        if kind == protocol.LOG:
            self.log(None, message)  # a plugin thread may log after its call returned
        elif kind == protocol.CTX and late:
            self.refuse_context(message)
        elif not late:
            self.kill(f"it answered call {str(message[1])[:20]}, which the host never made or has forgotten")

    def on_eof(self) -> None:
        """The worker closed its stdout: once it has exited, fail every call in flight."""
        self.wait_exit()
        with self._state:
            self._dead = True
            calls = list(self._calls.values())
            self._abandoned.clear()
        for call in calls:
            call.queue.put(Failed(self.crash_error))
        self.changed()

    # -- calls -----------------------------------------------------------------------

    def request(
        self,
        message: list[Any],
        context: Any,
        label: str,
        deadline: float,
        encode: Callable[[list[Any]], bytes] = protocol.pack,
    ) -> list[Any]:
        """Send `message`, with the call's id written at index 1, and return the call's answer
        (RESULT or ERROR). `encode` is `protocol.pack_plain` for a message built of plain values only.

        Raises TypeError, ValueError or OverflowError for a message that cannot be
        encoded, `time_out`'s error past `deadline`, and the crash error when the
        worker dies first.
        """
        call_id = message[1] = next(self._ids)  # the caller's list, made for this call: no copy
        choice = self._choices.get(label)
        if choice is None:
            choice = self._choice_for(label)
        call = Call(call_id, context, label, deadline, choice)
        payload = encode(message)
        with self._state:
            if self._dead:
                raise self.crash_error()
            self._calls[call_id] = call
            alone = len(self._calls) == 1
        board = self.board
        # Published before the write, so that the worker knows where its caller waits.
        apart = board.apart() if board is not None else -1
        try:
            self.write(payload, deadline)
            if self._read_lock.acquire(blocking=False):
                # The usual case: nobody else is reading, so this caller reads its own answer and,
                # having it, gives up the lead and its registration under one lock.
                try:
                    answer = self._timed_lead(call, apart) if apart >= 0 and alone else self._lead(call)
                except BaseException:
                    self._release_lead(call)
                    raise
                if answer is not None:
                    self._finish_as_lead(call)
                    return answer
                self._release_lead(call)
            answer = self._await(call)
        except BaseException:
            self._unregister(call)
            raise
        self._unregister(call)
        return answer

    def _choice_for(self, label: str) -> ReadChoice:
        if len(self._choices) >= _MAX_CHOICES:
            return self._shared_choice
        return self._choices.setdefault(label, ReadChoice())

    def _finish_as_lead(self, call: Call) -> None:
        with self._state:
            self._read_lock.release()
            calls = self._calls
            calls.pop(call.id, None)
            if calls:
                # Another call waits: it may read now. Any lead token queued to `call` is redundant.
                for other in calls.values():
                    other.queue.put(LEAD)
                    break
            elif self._idle_waiters:
                self._idle.notify_all()

    def abandon(self, call: Call) -> list[Any] | None:
        """Stop waiting for `call`, unless its answer arrived meanwhile: then return that answer.

        The answer of an abandoned call, when it comes, is discarded.
        """
        answer: Any = None
        others: list[list[Any]] = []
        with self._state:
            lead = False
            while True:
                try:
                    item = call.queue.get_nowait()
                except queue.Empty:
                    break
                if item is LEAD:
                    lead = True
                elif isinstance(item, Failed) or item[0] in protocol.TERMINAL:
                    answer = answer or item
                else:
                    others.append(item)
            if answer is None and self._calls.pop(call.id, None) is not None:
                self._abandoned[call.id] = time.monotonic() + self.options.grace_period
                if not self._calls and self._idle_waiters:
                    self._idle.notify_all()
            if lead:
                for other in self._calls.values():
                    if other is not call:
                        other.queue.put(LEAD)
                        break
        for item in others:
            if item[0] == protocol.CTX:
                self.refuse_context(item)
            else:
                self.log(call, item)
        if isinstance(answer, Failed):
            raise answer.error()
        return answer  # type: ignore[no-any-return]

    def _unregister(self, call: Call) -> None:
        with self._state:
            self._calls.pop(call.id, None)
            self._pass_queued_lead(call)
            if not self._calls and self._idle_waiters:
                self._idle.notify_all()

    def _pass_queued_lead(self, call: Call) -> None:
        # Holding _state. A lead token sent to a call that no longer waits goes to one that does.
        lead = False
        while not call.queue.empty():
            lead = call.queue.get_nowait() is LEAD or lead
        if lead:
            for other in self._calls.values():
                other.queue.put(LEAD)
                break

    def _await(self, call: Call) -> list[Any]:
        while True:
            if call.queue.empty():
                remaining = call.deadline - time.monotonic()
                if remaining <= 0:
                    answer = self.abandon(call)
                    if answer is not None:
                        return answer
                    self.time_out(call)
                if self._read_lock.acquire(blocking=False):
                    try:
                        answer = self._lead(call)
                    finally:
                        self._release_lead(call)
                    if answer is not None:
                        return answer
                    continue
                try:
                    item = call.queue.get(timeout=min(remaining, _SAFETY_WAKE))
                except queue.Empty:
                    continue
            else:
                item = call.queue.get_nowait()
            answer = self._take(call, item)
            if answer is not None:
                return answer

    def _timed_lead(self, call: Call, cpu: int) -> list[Any] | None:
        """`_lead` for a caller alone on `cpu` while the worker last ran on another: it spins, if
        recent answers came quickly, before each sleep, and times the wait for the next decision."""
        board = self.board
        assert board is not None
        answer, self._last_wait = board.timed_wait(cpu, self._last_wait, lambda spin: self._lead(call, spin))
        return answer

    def _lead(self, call: Call, spin: float = 0.0) -> list[Any] | None:
        """Read until something arrives for `call`, its deadline passes, or the worker is gone.

        Returns `call`'s answer when that is what arrived last in a read (the
        common case, handled without a trip through the queue); anything else
        for `call` is left in its queue.
        """
        while call.queue.empty() and not self._dead:
            remaining = call.deadline - time.monotonic()
            if remaining <= 0:
                return None
            messages = self.read(remaining, spin, call.choice)
            if messages is None:
                self.on_eof()
                return None
            last = messages.pop() if messages else None
            for message in messages:
                self.route(message)
            if last is not None:
                if last[0] == protocol.RESULT and last[1] == call.id and len(last) == 3 and call.queue.empty():
                    return last
                self.route(last)
        return None

    def _take(self, call: Call, item: Any) -> list[Any] | None:
        if item is LEAD:
            return None
        if isinstance(item, Failed):
            raise item.error()
        kind = item[0]
        if kind in protocol.TERMINAL:
            return item  # type: ignore[no-any-return]
        if kind == protocol.CTX:
            self.serve_context(call, item)
        else:
            self.log(call, item)
        return None
