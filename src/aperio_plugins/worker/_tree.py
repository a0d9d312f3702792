"""A worker's process tree, read from `/proc`, and the ending of it.

Used on both sides of the subreaper fallback: the worker ends its own
descendants on its way out, and the host ends them (the worker held still)
before it terminates or kills the worker. It works because the worker is a
child subreaper: an orphan among its descendants is re-parented to the worker,
not to pid 1, so walking parent links from the worker finds every one of them,
including those that double-forked and called `setsid`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

_ROUNDS_PAUSE = 0.002  # between rounds: lets killed processes die, and their children be re-parented


def _living_parents() -> dict[int, int]:
    """Return {pid: parent pid} of every process that is not a zombie."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                # The command name may hold spaces and parentheses: split after the last ')'.
                fields = stream.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone in the meantime
        if fields[0] not in (b"Z", b"X"):
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(root: int) -> list[int]:
    """Return the living descendants of `root`, parents before their children."""
    children: dict[int, list[int]] = {}
    for pid, parent in _living_parents().items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    pending = list(children.get(root, ()))
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def _reap_all() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def kill_descendants(root: int, *, reap: bool, timeout: float = 5.0) -> int:
    """SIGKILL every living descendant of `root`, round after round until none is left or
    `timeout` passes; return how many were signalled. `reap` when `root` is this process.

    One round is not enough: a process may fork while the round runs, and the
    children of a killed process are re-parented to `root` only once it is dead.
    """
    killed = 0
    deadline = time.monotonic() + timeout
    while True:
        if reap:
            _reap_all()
        found = descendants(root)
        if not found or time.monotonic() > deadline:
            return killed
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(_ROUNDS_PAUSE)
