"""Bounded spinning for an answer, only while the host and its worker run on different CPUs.

Why (measured, docs/worker-protocol.md, "Unpinned"): on this kind of VM a
wake-up that crosses CPUs wakes a halted virtual CPU, 20 to 35 µs each way, and
a call is two wake-ups. A side that spins on a non-blocking check instead of
sleeping is awake when the answer comes, and no wake-up crosses. But a side that
spins on the CPU its peer needs takes the CPU from the very process it waits
for, so spinning is decided per wait from one cheap signal: each side writes the
CPU it runs on (`sched_getcpu`, well under 1 µs) into a small page of shared
memory, the CPU board, and spins only when the other side's last CPU differs
from its own, more than one CPU is allowed, and recent waits were short.

The board is a memfd the host creates per worker and passes to it by number
(`--cpu-board`). It carries no data of the protocol: a wrong value (a plugin can
write to it, it runs in the worker's process) costs at most a bounded spin.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")

SHORT_FACTOR = 4
"""A wait spins only if the last comparable wait took at most this many spin budgets: a long one
would not have ended within the spin anyway (at most one budget of CPU is lost when it misjudges)."""
# Waits between two reads of the allowed CPUs (about 3 µs each). Prime, so that a worker's reads do
# not fall again and again on the one call in 32 for which the host restricts it to one CPU
# (`_placement.py`): read then, it would count itself pinned.
AFFINITY_REFRESH = 61
CHECK_EVERY = 8
"""While the two sides were last found together, only every 8th wait looks again: a split lasts for
hundreds of calls once made, and looking costs about 2 µs a side in the round trip (a ctypes call
and two accesses to the shared page, slowed by the other process's use of the caches), against
0.3 µs measured alone."""

BOARD_SIZE = 128
HOST_SLOT = 0  # the host's calling thread writes its CPU + 1 here (0: not known)
WORKER_SLOT = 64  # the worker's serving thread here: another cache line than the host's
_UNKNOWN = 0
_TOO_HIGH = 255  # a CPU number of 254 or more does not fit the byte: counted as not known


def spin_budget(own_cpu: int, peer_cpu: int | None, allowed_cpus: int, recent_wait: float, max_spin: float) -> float:
    """Return how long (seconds) a side may spin before it sleeps: `max_spin` or 0.

    `own_cpu` is where this thread runs, `peer_cpu` where the other side last
    ran (None: not known), `allowed_cpus` how many CPUs this thread may run on,
    `recent_wait` how long the last comparable wait lasted. Spinning helps only
    when the two sides are on different CPUs (then it takes nothing from the
    peer), and only when the answer is likely to come within the spin.
    """
    if max_spin <= 0 or allowed_cpus < 2 or own_cpu < 0 or peer_cpu is None or peer_cpu == own_cpu:
        return 0.0
    if recent_wait > max_spin * SHORT_FACTOR:
        return 0.0
    return max_spin


def _cpu_function() -> Callable[[], int] | None:
    """Return libc's `sched_getcpu` (a vDSO call), or None where there is none."""
    try:
        import ctypes  # only when spinning is on: a worker's start does not pay for it

        # PyDLL: the call keeps the GIL, which a vDSO call that never blocks need not give up.
        function = ctypes.PyDLL(None, use_errno=True).sched_getcpu
        function.restype, function.argtypes = ctypes.c_int, []
        if function() < 0:
            return None
    except (OSError, AttributeError):
        return None
    return function


class CpuBoard:
    """One side's view of the shared CPU board: publish where this side runs, read where the other does.

    Not thread-safe by itself; each side's callers decide when to use it (the
    host only from a caller with no other call in flight, the worker from its
    serving thread). `apart()` is the only call on every wait, and is kept to a
    vDSO call and two byte accesses: in the usual case (both sides on one CPU)
    anything more is paid on every call for nothing.
    """

    def __init__(self, fd: int, own_slot: int, max_spin: float) -> None:
        self._map = mmap.mmap(fd, BOARD_SIZE)
        self._own = own_slot
        self._peer = WORKER_SLOT if own_slot == HOST_SLOT else HOST_SLOT
        self.max_spin = max_spin
        self._cpu: Callable[[], int] = self._first_cpu
        self.allowed = 1  # CPUs this thread may run on, re-read every AFFINITY_REFRESH waits
        self._countdown = 0
        self._skip = 0  # waits left before the next look while together
        self._was_apart = False
        self.spins = 0  # waits that spun (for tests and benchmarks)
        self.caught = 0  # of those, the ones whose answer came within the spin

    @classmethod
    def create(cls, max_spin: float) -> tuple[CpuBoard, int] | None:
        """Return the host's board and the descriptor to pass to the worker (the caller closes it
        once the worker has it), or None where memfd or mmap is missing."""
        if not hasattr(os, "memfd_create"):
            return None
        # Close-on-exec like every other descriptor: `pass_fds` hands it to the one worker it is for.
        fd = os.memfd_create("aperio-cpu-board", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, BOARD_SIZE)
            return cls(fd, HOST_SLOT, max_spin), fd
        except OSError:
            os.close(fd)
            return None

    def close(self) -> None:
        self._map.close()

    def _first_cpu(self) -> int:
        # Resolved on the first wait, not at start: a worker's start does not pay for importing ctypes.
        self._cpu = _cpu_function() or (lambda: -1)
        return self._cpu()

    def publish(self) -> int:
        """Write the CPU this thread runs on into this side's slot; return it (-1 if not known)."""
        cpu = self._cpu()
        self._map[self._own] = cpu + 1 if 0 <= cpu < _TOO_HIGH - 1 else _UNKNOWN
        return cpu

    def peer(self) -> int | None:
        """Return the CPU the other side last published, or None."""
        value = self._map[self._peer]
        return None if value in (_UNKNOWN, _TOO_HIGH) else value - 1

    def apart(self) -> int:
        """Before a wait: publish where this thread runs; return that CPU if the other side last ran
        on another one and this thread may move between CPUs, else -1 (then do not spin).

        While the two were last found apart it looks at every wait (the next one may have them
        together again, where a spin would take the CPU from the peer); while together, at every
        `CHECK_EVERY`th.
        """
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = AFFINITY_REFRESH
            try:
                self.allowed = len(os.sched_getaffinity(0))
            except (OSError, AttributeError):
                self.allowed = 1
            if self.allowed < 2:
                self.publish()  # pinned: where it runs cannot change until the mask does
        if self.allowed < 2:
            return -1
        if not self._was_apart:
            self._skip -= 1
            if self._skip > 0:
                return -1
            self._skip = CHECK_EVERY
        cpu = self._cpu()
        board = self._map
        board[self._own] = cpu + 1 if 0 <= cpu < _TOO_HIGH - 1 else _UNKNOWN  # `publish`, inlined
        peer = board[self._peer]
        self._was_apart = cpu >= 0 and peer not in (cpu + 1, _UNKNOWN, _TOO_HIGH)
        return cpu if self._was_apart else -1

    def budget(self, own_cpu: int, recent_wait: float) -> float:
        """Return how long to spin now (see `spin_budget`)."""
        return spin_budget(own_cpu, self.peer(), self.allowed, recent_wait, self.max_spin)

    def timed_wait(self, own_cpu: int, recent_wait: float, wait: Callable[[float], _T]) -> tuple[_T, float]:
        """Run `wait(spin)` with this wait's spin budget (0: sleep at once); return its result and how
        long it took, the next decision's `recent_wait`. Counts the waits that spun and those answered
        within the spin, for both sides alike."""
        spin = self.budget(own_cpu, recent_wait)
        if spin > 0:
            self.spins += 1
        start = time.perf_counter()
        result = wait(spin)
        waited = time.perf_counter() - start
        if spin > 0 and waited <= spin:
            self.caught += 1
        return result, waited


def spin_until_ready(ready: Callable[[], object], budget: float) -> bool:
    """Call `ready` (a non-blocking check) until it is true or `budget` seconds pass; return whether it was.

    Between checks the thread yields its CPU: the board says where the peer last *waited*, and the
    scheduler may since have moved the peer onto this CPU (woken beside its waker, or pulled over
    while it spun itself), where a spin that kept the CPU would hold up the very answer it waits
    for until the budget ran out (docs/worker-protocol.md, "Third pass"). With nothing else to run
    here, `sched_yield` returns at once (about a microsecond).
    """
    end = time.perf_counter() + budget
    yield_cpu = os.sched_yield
    while True:
        if ready():
            return True
        if time.perf_counter() >= end:
            return False
        yield_cpu()
