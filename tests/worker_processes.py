"""Workers seen from the host's side of the sandbox: by the pid the host reports, and by its process tree.

Under bubblewrap the pid the host reports for a worker (`WorkerStatus.pid`,
`PluginInfo.worker_pid`) is bwrap's; bwrap forks the sandbox's pid 1 (bwrap
again), which runs the worker's interpreter. A plugin inside sees its own pid
as 2, so a pid a plugin reports names nothing outside. What does name a
process from both sides is its start time (`/proc/<pid>/stat` field 22, in
clock ticks since boot, the same in every PID namespace): the probe plugins
report it, and these helpers find it again in the host's `/proc` under the
host-reported pid. Without a sandbox the reported pid is the interpreter's own
and the same helpers give the same answers.
"""

from __future__ import annotations

import os
from pathlib import Path

WORKER_MODULE = "aperio_plugins.worker"

# What a plugin puts in its answers to say which process it runs in (see `start_time`).
SELF_START_TIME = 'open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()[19].decode()'


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot, as text; None if there is no such process."""
    fields = _stat(pid)
    return fields[19] if fields is not None else None


def identity(pid: int) -> tuple[int, str] | None:
    """(pid, start time): names one process even after its pid is reused; None if there is none."""
    started = start_time(pid)
    return None if started is None else (pid, started)


def alive(process: int | tuple[int, str] | None) -> bool:
    """Whether a process (by pid, or by `identity()`) is running; a zombie waiting to be reaped is not."""
    if process is None:
        return False
    pid = process if isinstance(process, int) else process[0]
    fields = _stat(pid)
    if fields is None:
        return False
    if not isinstance(process, int) and fields[19] != process[1]:
        return False  # the pid now belongs to another process
    return fields[0] not in ("Z", "X")


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _is_bwrap(command: list[str]) -> bool:
    return bool(command) and os.path.basename(command[0]) == "bwrap"


def children(pid: int) -> list[int]:
    """The living children of `pid`, from every process's parent link in `/proc`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def tree(pid: int) -> list[tuple[int, str]]:
    """`pid` and its living descendants, each by `identity()`, parents first."""
    found = []
    pending = [pid]
    while pending:
        current = pending.pop(0)
        named = identity(current)
        if named is not None and alive(named):
            found.append(named)
            pending.extend(children(current))
    return found


def interpreter(host_pid: int | None) -> tuple[int, str] | None:
    """The worker's interpreter in the tree of the pid the host reports for it, by `identity()`.

    That is the reported process itself without a sandbox, and the first
    process below bwrap's two that is not bwrap under one.
    """
    if host_pid is None:
        return None
    for pid, started in tree(host_pid):
        command = command_line(pid)
        if not _is_bwrap(command) and WORKER_MODULE in command:
            return pid, started
    return None


def token(host_pid: int | None) -> str | None:
    """What a probe plugin in the worker the host reports as `host_pid` answers for "which process
    are you": its interpreter's start time. None when no such worker runs."""
    found = interpreter(host_pid)
    return found[1] if found is not None else None


def worker_pids(marker: str) -> list[int]:
    """Host-side pids of live workers whose command line contains `marker`: bwrap's outer process
    under the sandbox, the interpreter without one (never the processes inside a sandbox)."""
    matching = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            text = " ".join(command_line(pid)) + " "
            if WORKER_MODULE in text and marker in text and alive(pid):
                fields = _stat(pid)
                if fields is not None:
                    matching[pid] = int(fields[1])
    return sorted(pid for pid, parent in matching.items() if parent not in matching)


def worker_processes(marker: str) -> list[tuple[int, str]]:
    """Every live process (bwrap's, the interpreter, a plugin's child that kept its arguments) whose
    command line contains `marker` and names the worker module, by `identity()`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            pid = int(entry)
            text = " ".join(command_line(pid)) + " "
            named = identity(pid)
            if WORKER_MODULE in text and marker in text and named is not None and alive(named):
                found.append(named)
    return found


def gone(process: tuple[int, str]) -> bool:
    """Whether the process named by `identity()` has left `/proc` altogether: exited and reaped, not a zombie."""
    return identity(process[0]) != process


def ended(processes: list[tuple[int, str]]) -> bool:
    """Whether a worker's tree, as `tree()` gave it, has ended: the host's child (the first) reaped and
    gone, and nothing else alive.

    Under bubblewrap the sandbox's pid 1 is the one process not reaped by the
    host: bwrap's outer process returns the worker's status as soon as the
    worker has died (it learns it through an eventfd) without waiting for its
    own child, which the kernel then hands to the system's init as a zombie.
    It is dead, holds nothing, and is not the host's to reap.
    """
    return gone(processes[0]) and not any(alive(process) for process in processes[1:])
