"""Where a worker runs: a hint, now and then, that brings it back beside its caller.

Why (measured, see docs/worker-protocol.md, "Unpinned: host and worker on
two CPUs"): a call is two wake-ups, and on this kind of VM a wake-up that
crosses CPUs wakes a halted virtual CPU, 20 to 35 µs each way, against a few
µs on the waker's own CPU. The scheduler usually keeps a caller and its worker
on one CPU, but a pair it had placed apart often stayed apart for the rest of a
burst of calls (sampled: apart in every sample of each slow round, in none of
the fast ones), which made a trivial call two to three times as slow.

So, every `HINT_EVERY` calls made by a caller alone, if the calls are short
(their wake-ups dominate them) and the caller may run on more than one CPU,
the host restricts the worker's serving thread to the CPU the caller runs on
for one call, and puts the worker's own CPU mask back as soon as the answer is
in: the call's wake-up lands the worker beside its caller, and from there the
scheduler's own affine wake-ups keep the pair together. It is never a pin:
between two hints the kernel places the worker as it likes. A caller pinned
to one CPU is left alone, and so is a worker whose mask excludes the caller's
CPU. Looking first where the worker last ran (`/proc/<pid>/stat`, about 20 µs)
would cost more than the hint itself (three affinity calls, about 7 µs).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

HINT_EVERY = 32  # calls between two hints: about 7 µs each, so about 0.2 µs a call
SHORT_CALL = 0.002  # seconds: a longer call is not dominated by its wake-ups, and is not hinted
_PROCESSOR = 36  # index of the "processor" field (39th) of /proc/<pid>/stat after the command name


def last_cpu(stat_path: str) -> int:
    """Return the CPU the task of `stat_path` (a /proc .../stat file) last ran on; raise OSError."""
    with open(stat_path, "rb") as stream:
        fields = stream.read().rsplit(b")", 1)[1].split()  # the command name may hold ") "
    try:
        return int(fields[_PROCESSOR])
    except (IndexError, ValueError):
        raise OSError(f"unexpected format of {stat_path}") from None


def _cpu_reader() -> Callable[[], int]:
    """Return a function giving the CPU the calling thread runs on: libc's `sched_getcpu` (0.3 µs),
    or, without it, this thread's /proc entry (about 20 µs)."""
    try:
        import ctypes  # imported on the first hint only: a pinned or single-CPU host never pays for it

        function = ctypes.CDLL(None, use_errno=True).sched_getcpu
        function.restype, function.argtypes = ctypes.c_int, []
        if function() < 0:
            raise OSError("sched_getcpu failed")
    except (OSError, AttributeError):
        return lambda: last_cpu("/proc/thread-self/stat")

    def current() -> int:
        cpu: int = function()
        if cpu < 0:
            raise OSError("sched_getcpu failed")
        return cpu

    return current


class Placement:
    """The placement hints of one worker. Thread-safe; one hint in force at a time.

    `find_pid` returns the host-side pid of the worker's serving thread (the
    interpreter, inside the sandbox when there is one), or None when it cannot
    be found: then no hint is ever given.
    """

    def __init__(self, find_pid: Callable[[], int | None], every: int = HINT_EVERY) -> None:
        self._find_pid = find_pid
        self._every = every
        self._countdown = every  # decremented without a lock: an approximate count is enough
        self._lock = threading.Lock()  # held from a hint until the worker's mask is put back
        self._pid: int | None = None
        self._resolved = False
        self._short = True  # whether the last call timed was short enough to hint the next
        self._saved: set[int] | None = None  # the worker's own mask while a hint is in force
        self._current_cpu: Callable[[], int] | None = None
        self.hints = 0  # how many hints were given (for tests and benchmarks)

    def due(self) -> bool:
        """Whether this call should be timed and perhaps hinted (cheap: a counter)."""
        self._countdown -= 1
        return self._countdown <= 0

    def before(self, *, alone: bool) -> bool:
        """Before a call that is `due`: give the hint if it applies. Returns whether one is in force
        (then `after` must be called). `alone`: no other call is in flight (with several callers
        there is no one CPU to be beside)."""
        self._countdown = self._every
        if not (alone and self._short) or not self._lock.acquire(blocking=False):
            return False
        try:
            saved = self._restrict()
        except OSError:  # no /proc or affinity here, or the worker is gone: no hint this time
            saved = None
        if saved is None:
            self._lock.release()
            return False
        self._saved = saved
        self.hints += 1
        return True

    def _restrict(self) -> set[int] | None:
        if len(os.sched_getaffinity(0)) < 2:
            return None  # a pinned caller: nothing to gain, and nothing to disturb
        if not self._resolved:
            self._pid, self._resolved = self._find_pid(), True
            self._current_cpu = _cpu_reader()
        if self._pid is None or self._current_cpu is None:
            return None
        cpu = self._current_cpu()
        saved = os.sched_getaffinity(self._pid)
        if cpu not in saved or saved == {cpu}:
            return None  # confined elsewhere by someone else, or already there for good: leave it
        os.sched_setaffinity(self._pid, {cpu})
        return saved

    def after(self, hinted: bool, seconds: float) -> None:
        """After a call that was `due` (answered or not): put the worker's own mask back, and note
        whether the call was short enough for the next one to be hinted."""
        self._short = seconds <= SHORT_CALL
        if not hinted:
            return
        saved, self._saved = self._saved, None
        try:
            if saved is not None and self._pid is not None:
                with contextlib.suppress(OSError):  # the worker died meanwhile
                    os.sched_setaffinity(self._pid, saved)
        finally:
            self._lock.release()
