"""One long-lived thread per host process that starts every worker and runs every timer.

Why one process-wide thread rather than one per host object: Linux delivers a
worker's parent-death signal when the *thread* that forked it exits, so the
thread that spawns workers must live as long as the process. The thread is
created on first use, never at import, and again in a forked child (which
inherits the object but not the thread).
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ClassVar, Protocol, TypeVar

_T = TypeVar("_T")
_log = logging.getLogger("aperio.worker")


class Stoppable(Protocol):
    def stop_now(self) -> None: ...


class Timer:
    """A scheduled callback; `cancel()` before it runs and it never will."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Supervisor:
    """Runs callbacks on its own thread: `call` waits for the result, `schedule` does not."""

    _instance: ClassVar[Supervisor | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(cls) -> Supervisor:
        """Return this process's supervisor, starting it on first use."""
        with cls._instance_lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._condition = threading.Condition()
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._workers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._thread = threading.Thread(target=self._run, name="aperio-worker-supervisor", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def call(self, function: Callable[[], _T]) -> _T:
        """Run `function` on the supervisor thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return function()
        future: Future[_T] = Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function())
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller as is
                    future.set_exception(exc)

        self.schedule(0.0, run)
        return future.result()

    def schedule(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` on the supervisor thread after `delay` seconds; return a cancellable handle."""
        timer = Timer(time.monotonic() + max(0.0, delay), callback)
        with self._condition:
            heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
            self._condition.notify()
        return timer

    def track(self, worker: Stoppable) -> None:
        """Remember `worker` so that it is stopped when the interpreter exits."""
        self._workers.add(worker)

    def _next_due(self) -> Timer:
        with self._condition:
            while True:
                if self._timers:
                    when, _, timer = self._timers[0]
                    wait = when - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._timers)
                        return timer
                    self._condition.wait(wait)
                else:
                    self._condition.wait()

    def _run(self) -> None:
        # Never returns: the thread's end would SIGKILL every worker it started.
        while True:
            timer = self._next_due()
            if timer.cancelled:
                continue
            try:
                timer.callback()
            except Exception:  # noqa: BLE001 - a bad callback must not end the thread that keeps workers alive
                _log.exception("aperio worker supervisor: a scheduled callback failed")

    def _at_exit(self) -> None:
        # atexit does not run on SIGKILL; the parent-death signal covers that case.
        if os.getpid() != self.pid:
            return  # a forked child inherited this handler; the workers are its parent's
        for worker in list(self._workers):
            try:
                worker.stop_now()
            except Exception:  # noqa: BLE001 - one stuck worker must not keep the others alive
                _log.exception("aperio worker supervisor: stopping a worker at exit failed")
