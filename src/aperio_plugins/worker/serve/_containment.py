"""What a worker does to itself before it loads any plugin code: tie its life to the host,
lower its resource limits, and take the protocol off stdin and stdout (its logging is `_log.py`).

These run in the worker because no thread-safe `Popen` option can do them
(`preexec_fn` is unsafe in a threaded host).
"""

from __future__ import annotations

import atexit
import ctypes
import io
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_ORPHANED = 4
_CPU_HARD_MARGIN = 5  # seconds between SIGXCPU at the soft limit and SIGKILL at the hard one


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when the host dies (Linux); exit now if it already has.

    The signal follows the host *thread* that started the worker, which is why
    the host starts workers from one long-lived thread.
    """
    if sys.platform.startswith("linux"):
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, "PR_SET_PDEATHSIG")
    # The host may have died before the signal was armed: then we were re-parented.
    if os.getppid() != parent_pid:
        os._exit(EXIT_ORPHANED)


def _prctl(option: int, value: int, name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({name}) failed: {os.strerror(errno)}")


def become_subreaper() -> None:
    """Without a sandbox: adopt every orphan among this worker's descendants, and end them all
    when the worker exits normally.

    As a child subreaper (Linux), a descendant that double-forks is re-parented
    to this worker instead of pid 1, so the worker and the host (which holds the
    worker still and walks its tree before it terminates or kills it) can find
    and end it. A worker killed outright leaves its orphans to its process group,
    which the host kills; one that also left the group is not covered.
    """
    if not sys.platform.startswith("linux"):
        return
    _prctl(PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")
    # Imported here: only the fallback needs it, and a worker's start should import little.
    from .._tree import kill_descendants

    atexit.register(kill_descendants, os.getpid(), reap=True)


def _lower_limit(which: int, soft: int, hard: int) -> None:
    current_soft, current_hard = resource.getrlimit(which)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
    if current_soft != resource.RLIM_INFINITY:
        soft = min(soft, current_soft)
    resource.setrlimit(which, (min(soft, hard), hard))


def apply_limits(memory_bytes: int | None, cpu_seconds: int | None) -> None:
    """Lower RLIMIT_AS and RLIMIT_CPU; never raise a limit the host already has."""
    if memory_bytes:
        _lower_limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    if cpu_seconds:
        _lower_limit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + _CPU_HARD_MARGIN)


def take_protocol_fds() -> tuple[int, int]:
    """Return private copies of stdin and stdout for the protocol, and point fds 0 and 1 elsewhere.

    Afterwards a plugin's `print()` goes to stderr (and so to the host's log)
    instead of corrupting the protocol, and nothing in the plugin can read the
    host's frames from stdin. `os.dup` makes the copies non-inheritable, so a
    plugin's own subprocesses do not hold the protocol pipes open.
    """
    sys.stdout.flush()
    fd_in, fd_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    # fd 1 is now a pipe to the host's log: flush each line, as stderr does, so lines arrive in order.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    return fd_in, fd_out


def ignore_terminal_signals() -> None:
    """A Ctrl-C meant for the host must not kill its workers; the host stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
