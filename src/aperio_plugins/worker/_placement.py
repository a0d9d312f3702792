"""Where a worker runs: a hint, now and then, that brings it back to its caller's CPU.

Why (measured, see docs/worker-protocol.md "Unpinned: why a call left the
floor"): a call is two wake-ups, and on this kind of VM a wake-up that crosses
CPUs wakes a halted virtual CPU, 20 to 35 µs each way, against a few µs on
the waker's own CPU. The scheduler keeps a raw pipe echo on one CPU, but
placed a worker and its caller apart for whole runs of calls (every sample
apart in the slow rounds, none in the fast ones), tripling a trivial call.

So, every `CHECK_EVERY` calls made by a caller alone, the host compares the
CPU its calling thread runs on with the one the worker's serving thread last
ran on. If they differ, the last call was short (wake-ups dominate it) and the
worker may run on the caller's CPU, the next call restricts the worker to that
CPU while it is woken, and the worker's own CPU mask is put back as soon as the
answer is in: the wake-up lands the worker beside its caller, and from there
the scheduler's own affine wake-ups keep the pair together. It is never a pin:
between two hints the kernel places the worker as it likes. A caller allowed
on one CPU only (pinned) is left alone, and so is a worker whose mask excludes
the caller's CPU.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

CHECK_EVERY = 64  # calls between two looks: two /proc reads, about 20 µs, spread over 64 calls
SHORT_CALL = 0.002  # seconds: a call longer than this is not dominated by its wake-ups
_PROCESSOR = 36  # index of the "processor" field (39th) of /proc/<pid>/stat after the command name


def last_cpu(stat_path: str) -> int:
    """Return the CPU the task of `stat_path` (a /proc .../stat file) last ran on; raise OSError."""
    with open(stat_path, "rb") as stream:
        fields = stream.read().rsplit(b")", 1)[1].split()  # the command name may hold ") "
    try:
        return int(fields[_PROCESSOR])
    except (IndexError, ValueError):
        raise OSError(f"unexpected format of {stat_path}") from None


class Placement:
    """The placement hint of one worker. Thread-safe; one hint in force at a time.

    `find_pid` returns the host-side pid of the worker's serving thread (the
    interpreter, inside the sandbox when there is one), or None when it cannot
    be found: then no hint is ever given.
    """

    def __init__(self, find_pid: Callable[[], int | None], every: int = CHECK_EVERY) -> None:
        self._find_pid = find_pid
        self._every = every
        self._countdown = every  # decremented without a lock: an approximate count is enough
        self._lock = threading.Lock()  # held from a hint until its mask is put back
        self._pid: int | None = None
        self._resolved = False
        self._pending: int | None = None  # the caller's CPU to bring the worker to on the next call
        self._saved: set[int] | None = None  # the worker's own mask while a hint is in force
        self.hints = 0  # how many hints were given (for tests and benchmarks)

    def due(self) -> bool:
        """Whether this call should be timed and looked at (cheap: a counter)."""
        self._countdown -= 1
        return self._countdown <= 0 or self._pending is not None

    def before(self) -> bool:
        """Before a call: apply a pending hint. Returns whether one is in force (call `after`)."""
        if self._pending is None or not self._lock.acquire(blocking=False):
            return False
        cpu, self._pending = self._pending, None
        pid = self._pid
        try:
            if pid is None:
                raise OSError("no pid")
            saved = os.sched_getaffinity(pid)
            if cpu not in saved:
                raise OSError("the worker may not run there")
            os.sched_setaffinity(pid, {cpu})
        except OSError:  # the worker is gone, or its mask changed: no hint this time
            self._lock.release()
            return False
        self._saved = saved
        self.hints += 1
        return True

    def after(self, hinted: bool, seconds: float, *, alone: bool) -> None:
        """After a call (answered or not): put the worker's mask back; every `CHECK_EVERY` calls,
        if the call took at most `SHORT_CALL` and no other call is in flight (`alone`: with many
        callers there is no one CPU to be beside), look where both sides run and decide on a hint
        for the next call."""
        if hinted:
            saved, self._saved = self._saved, None
            try:
                if saved is not None and self._pid is not None:
                    with contextlib.suppress(OSError):  # the worker died meanwhile
                        os.sched_setaffinity(self._pid, saved)
            finally:
                self._lock.release()
            return
        if self._countdown > 0:
            return
        self._countdown = self._every
        if alone and seconds <= SHORT_CALL:
            self._pending = self._look()

    def _look(self) -> int | None:
        """Return the caller's CPU if the worker last ran on another one and the caller may move."""
        try:
            if len(os.sched_getaffinity(0)) < 2:
                return None  # a pinned caller: nothing to gain, and nothing to disturb
            if not self._resolved:
                self._pid, self._resolved = self._find_pid(), True
            if self._pid is None:
                return None
            here = last_cpu("/proc/thread-self/stat")
            there = last_cpu(f"/proc/{self._pid}/stat")
        except OSError:  # no /proc, or the worker is gone
            return None
        return here if here != there else None
